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
//! program, reused by every spawn, and makes the jail directory, which stays
//! empty on the host.
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
//!    `pids.max` and, for LC, `cpu.shares` = mcpu × 1024 / 1000; open each
//!    `cgroup.procs` for the child to join.
//! 3. Make a close-on-exec report pipe.
//! 4. Block every signal on this thread (raw rt_sigprocmask, glibc's
//!    internal ones too), then `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD |
//!    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)` with no exit
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
//! 1. `Signals`: every signal to SIG_DFL (all are still blocked), so that
//!    no handler of the parent's runs in borrowed memory and no ignored
//!    signal survives exec.
//! 2. `Cgroups`: write `0` (the writer itself) to each `cgroup.procs`: the
//!    proc is under its memory and pids limits before it runs a line of its
//!    own. (v1 cannot use `CLONE_INTO_CGROUP`.)
//! 3. `Netns`: setns into the realm's network namespace.
//! 4. `Hostname`: the realm's name, in the new UTS namespace.
//! 5. `MountsPrivate`: `/` recursively private, so nothing below reaches the
//!    host.
//! 6. `JailRoot`: a one-page tmpfs (8 inodes) on the jail directory,
//!    visible only in this mount namespace, with an empty `proc/` and
//!    `init`.
//! 7. `JailBinary`: bind the binary onto `init`, then remount the bind
//!    read-only, nosuid, nodev. No copy: a warm start copies no file.
//! 8. `JailProc`: mount a fresh proc (`subset=pid`: no host-wide files) on
//!    `proc/`, before pivoting (proc cannot be mounted once the old root is
//!    detached inside a user namespace; harmless here).
//! 9. `PivotRoot`: chdir to the jail, `pivot_root(".", ".")`,
//!    `umount2(".", MNT_DETACH)` (the host's whole tree leaves this
//!    namespace), chdir `/`, remount `/` read-only, nosuid, nodev, noexec.
//! 10. `Fds`: move the report pipe above 3, dup /dev/null, stdout, stderr
//!     and the control fd to 0, 1, 2, 3 (through fresh fds above 3, so that
//!     no dup2 clobbers a source), mark every fd from 4 up close-on-exec.
//! 11. `Rlimits`: RLIMIT_CORE 0; RLIMIT_NOFILE soft = hard = the configured
//!     bound.
//! 12. `BoundingSet`: drop every capability from the bounding set (needs
//!     CAP_SETPCAP, so before the uid change).
//! 13. `Credentials`: setgroups(0), setresgid, setresuid to the realm's
//!     gid and uid: permitted, effective and ambient sets are cleared.
//! 14. `Capabilities`: capset all-zero (inheritable), clear ambient.
//! 15. `NoNewPrivs`.
//! 16. `SignalMask`: unblock everything: the parent's blocked signals do
//!     not leak into the proc.
//! 17. `Seccomp`: install the precompiled program (answers clone3 ENOSYS,
//!     allows `clone` only without namespace flags, EPERM for anything not
//!     listed). Then send the step timestamps on the report pipe.
//! 18. `Exec`: `execve("/init")`. Its success closes the report pipe.
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
//! namespaces die with it, taking the jail's mounts along: nothing of the
//! jail exists on the host. Dropping a running [`Child`] kills and reaps it
//! (bounded wait). Dropping the last [`RealmHandle`] removes the realm's
//! cgroups and closes its netns; dropping the [`Sandbox`] removes its
//! cgroups and the jail directory.
//!
//! # What a warm start will change
//!
//! On this machine a cold spawn costs about 3× a bare vfork+exec (see
//! `tests/spawn_cost.rs`); the namespaces at clone, the jail mounts and the
//! seccomp install (the kernel translates and JITs the program per install)
//! are each 100-250 µs. The planned warm path is a per-realm zygote already
//! inside the realm's netns with the seccomp program compiled: it forks
//! children that inherit those, so a spawn pays for the pid/mount
//! namespaces, the binary bind and exec only. Not built yet.

pub mod cgroup;
mod child;
mod error;
pub mod limits;
pub mod policy;
mod sandbox;

pub use child::{Stamps, Step};
pub use error::{Error, ProcRef, Result};
pub use sandbox::{Child, Class, Config, ExitStatus, RealmHandle, Sandbox, SpawnSpec, SpawnTimes};
