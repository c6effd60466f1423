//! What runs in the cloned child between clone and exec: the steps of the
//! spawn sequence, in order, each a raw system call (or a few) whose
//! failure is reported to the parent as `(step, errno)` on the report pipe.
//!
//! The child shares the parent's memory (CLONE_VM) and runs on its own
//! small stack while the parent's thread waits (CLONE_VFORK), exactly like
//! posix_spawn. So it must not allocate, take locks, or call anything that
//! is not a plain system call wrapper: every string and array it needs was
//! built by the parent beforehand, in [`ChildArgs`]. It uses raw syscalls
//! for credentials because glibc's `setresuid` would broadcast to the
//! parent's other threads.

use std::ffi::{c_char, c_int, c_long, c_void};

use crate::limits;

/// The steps of the child, in order. The number is what travels on the
/// report pipe; [`crate::Error`] has one `Child*` variant per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Set every signal to its default disposition (all are still blocked,
    /// as the parent blocked them around clone).
    Signals = 1,
    /// Join the proc's cgroups by writing 0 to each `cgroup.procs` the
    /// parent opened.
    Cgroups,
    /// Join the realm's network namespace (made once per realm).
    Netns,
    /// Name the new UTS namespace after the realm.
    Hostname,
    /// Enter the sandbox's jail template (a mount namespace whose root is a
    /// read-only one-page tmpfs holding the empty mount points `init` and
    /// `proc`), then unshare a private copy of it: a few mounts to copy,
    /// none of the host's.
    MountNamespace,
    /// Attach the binary (a detached bind mount the parent cloned with
    /// open_tree) at `/init`, then make it read-only, nosuid, nodev.
    JailBinary,
    /// Mount a fresh /proc of the new pid namespace (pid subset only).
    JailProc,
    /// stdin (/dev/null), stdout, stderr, control fd at 0..=3; every other
    /// fd close-on-exec.
    Fds,
    /// RLIMIT_CORE 0, RLIMIT_NOFILE bounded (soft = hard).
    Rlimits,
    /// Empty the capability bounding set.
    BoundingSet,
    /// No supplementary groups; the realm's gid, then uid.
    Credentials,
    /// Clear the inheritable and ambient sets (setresuid already cleared
    /// the permitted and effective ones).
    Capabilities,
    /// no_new_privs, which seccomp without CAP_SYS_ADMIN requires anyway.
    NoNewPrivs,
    /// Unblock every signal.
    SignalMask,
    /// Install the compiled seccomp program.
    Seccomp,
    /// execve `/init`.
    Exec,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 16] = [
        Step::Signals,
        Step::Cgroups,
        Step::Netns,
        Step::Hostname,
        Step::MountNamespace,
        Step::JailBinary,
        Step::JailProc,
        Step::Fds,
        Step::Rlimits,
        Step::BoundingSet,
        Step::Credentials,
        Step::Capabilities,
        Step::NoNewPrivs,
        Step::SignalMask,
        Step::Seccomp,
        Step::Exec,
    ];

    /// The step numbered `n` on the report pipe.
    pub fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }
}

/// The child's timestamps (CLOCK_MONOTONIC, ns), one per phase, sent to
/// the parent before exec. Phases: 0 child running; 1 signals reset and
/// cgroups joined; 2 netns and hostname; 3 jail ready;
/// 4 fds, rlimits, credentials, capabilities, no_new_privs, signal mask;
/// 5 seccomp installed (the next thing is execve).
pub type Stamps = [u64; limits::CHILD_STAMPS_COUNT];

/// Report kinds on the pipe.
pub const REPORT_STAMPS: u32 = 1;
/// A step failed; `step` and `errno` say which and why.
pub const REPORT_FAILED: u32 = 2;

/// One record on the report pipe. Written whole (well under PIPE_BUF, so
/// atomically).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Report {
    /// [`REPORT_STAMPS`] or [`REPORT_FAILED`].
    pub kind: u32,
    /// The failed [`Step`] as a number, 0 for stamps.
    pub step: u32,
    /// The errno of the failure.
    pub errno: i32,
    /// How many stamps are set.
    pub stamps_count: u32,
    /// Timestamps taken so far.
    pub stamps: Stamps,
}

/// Everything the child needs, prepared by the parent. Every pointer
/// points into memory the parent keeps alive and unchanged until clone
/// returns (the parent is suspended until the child execs or exits).
#[derive(Debug)]
#[repr(C)]
pub struct ChildArgs {
    pub report_fd: c_int,
    pub cgroup_fds: [c_int; 3],
    pub cgroup_fds_count: usize,
    pub netns_fd: c_int,
    pub hostname: *const c_char,
    pub hostname_len: usize,
    /// The sandbox's jail template mount namespace.
    pub jail_template_fd: c_int,
    /// The binary as a detached mount (open_tree OPEN_TREE_CLONE).
    pub binary_tree_fd: c_int,
    /// Sources of fds 0, 1, 2, 3.
    pub fd_sources: [c_int; 4],
    pub nofile: u64,
    pub cap_last: u32,
    pub uid: u32,
    pub gid: u32,
    pub seccomp: *const libc::sock_fprog,
    pub argv: *const *const c_char,
    pub envp: *const *const c_char,
}

fn errno() -> c_int {
    // SAFETY: glibc's errno location of the calling thread. The child runs
    // on the parent thread's TLS (no CLONE_SETTLS), which is fine: that
    // thread is suspended until the child execs or exits.
    unsafe { *libc::__errno_location() }
}

fn stamp(report: &mut Report) {
    let i = report.stamps_count as usize;
    if i < report.stamps.len() {
        report.stamps[i] = crate::monotonic_ns();
        report.stamps_count += 1;
    }
}

/// Writes the report; nothing can be done if that fails (the parent then
/// sees EOF and a dead child, and says so).
fn send(fd: c_int, report: &Report) {
    // SAFETY: writes the bytes of a live, plain-data local.
    unsafe {
        libc::write(
            fd,
            (report as *const Report).cast::<c_void>(),
            std::mem::size_of::<Report>(),
        );
    }
}

/// Reports `step` failed with the current errno; the value is the child's
/// exit code.
fn fail(fd: c_int, report: &mut Report, step: Step) -> c_int {
    report.errno = errno();
    report.kind = REPORT_FAILED;
    report.step = step as u32;
    send(fd, report);
    127
}

/// move_mount(2): the same number on every architecture.
const SYS_MOVE_MOUNT: c_long = 429;
/// move_mount's flag: the source is the fd itself.
const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;

/// Raw syscall with six arguments.
///
/// # Safety
///
/// The arguments must be what syscall `nr` expects: pointers valid for the
/// access the kernel makes through them.
unsafe fn sys(nr: c_long, a: [usize; 6]) -> c_long {
    // SAFETY: the caller vouches for the arguments.
    unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

/// The child: runs every step, then execs. Returns (and so exits with) 127
/// only on failure, after reporting which step failed.
pub extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive and unchanged while
    // the parent waits for this child to exec or exit (CLONE_VFORK).
    let a = unsafe { &*(arg as *const ChildArgs) };
    let mut report = Report::default();
    let mut rfd = a.report_fd;
    stamp(&mut report);
    macro_rules! check {
        ($step:expr, $ret:expr) => {
            if $ret < 0 {
                return fail(rfd, &mut report, $step);
            }
        };
    }

    // Step 1. Default dispositions. Handlers would die at exec anyway, but
    // ignored signals survive it, and the parent's handlers must never run
    // here once signals are unblocked. SIGKILL and SIGSTOP cannot change.
    let dfl = [0usize; 4]; // kernel sigaction: handler SIG_DFL, flags, restorer, mask
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        // SAFETY: rt_sigaction with a live kernel-layout sigaction and the
        // kernel's 8-byte sigset size.
        let r = unsafe { sys(libc::SYS_rt_sigaction, [sig, dfl.as_ptr() as usize, 0, 8, 0, 0]) };
        check!(Step::Signals, r);
    }

    // Step 2. Join the proc's cgroups: "0" is the writer itself, whatever
    // its pid namespace.
    for &fd in a.cgroup_fds.iter().take(a.cgroup_fds_count) {
        // SAFETY: writes one byte from a static string to an fd the parent
        // opened.
        let r = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
        check!(Step::Cgroups, r as c_long);
    }
    stamp(&mut report);

    // Step 3. The realm's network namespace.
    // SAFETY: setns on an fd of a network namespace the realm keeps open.
    let r = unsafe {
        sys(
            libc::SYS_setns,
            [a.netns_fd as usize, libc::CLONE_NEWNET as usize, 0, 0, 0, 0],
        )
    };
    check!(Step::Netns, r);

    // Step 4. Hostname of the new UTS namespace.
    // SAFETY: the parent's NUL-terminated realm name and its length.
    let r = unsafe { sys(libc::SYS_sethostname, [a.hostname as usize, a.hostname_len, 0, 0, 0, 0]) };
    check!(Step::Hostname, r);
    stamp(&mut report);

    // Step 5. The jail: enter the template mount namespace (root and cwd
    // become its read-only tmpfs root), then take a private copy of it.
    // No host mount is copied, so neither this nor the namespace's
    // teardown at exit walks the host's mount table.
    // SAFETY: setns on the sandbox's mount namespace fd.
    let r = unsafe {
        sys(
            libc::SYS_setns,
            [a.jail_template_fd as usize, libc::CLONE_NEWNS as usize, 0, 0, 0, 0],
        )
    };
    check!(Step::MountNamespace, r);
    // SAFETY: unshare with a flag.
    let r = unsafe { sys(libc::SYS_unshare, [libc::CLONE_NEWNS as usize, 0, 0, 0, 0, 0]) };
    check!(Step::MountNamespace, r);

    // Step 6. The binary, bound read-only at /init (no copy: a warm start
    // copies nothing). The bind carries the source's flags; the remount
    // applies ours.
    // SAFETY: move_mount of the parent's detached tree fd onto a static
    // NUL-terminated path.
    let r = unsafe {
        sys(
            SYS_MOVE_MOUNT,
            [
                a.binary_tree_fd as usize,
                c"".as_ptr() as usize,
                libc::AT_FDCWD as usize,
                c"/init".as_ptr() as usize,
                MOVE_MOUNT_F_EMPTY_PATH,
                0,
            ],
        )
    };
    check!(Step::JailBinary, r);
    let nosuid_nodev = (libc::MS_NOSUID | libc::MS_NODEV) as usize;
    let ro_bind = (libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY) as usize | nosuid_nodev;
    // SAFETY: mount with static NUL-terminated strings.
    let r = unsafe { sys(libc::SYS_mount, [0, c"/init".as_ptr() as usize, 0, ro_bind, 0, 0]) };
    check!(Step::JailBinary, r);

    // Step 7. /proc of the new pid namespace, pids only: no host-wide
    // files (meminfo, sys, sysrq-trigger) in the jail.
    // SAFETY: mount with static NUL-terminated strings.
    let r = unsafe {
        sys(
            libc::SYS_mount,
            [
                c"proc".as_ptr() as usize,
                c"/proc".as_ptr() as usize,
                c"proc".as_ptr() as usize,
                nosuid_nodev | libc::MS_NOEXEC as usize,
                c"subset=pid".as_ptr() as usize,
                0,
            ],
        )
    };
    check!(Step::JailProc, r);
    stamp(&mut report);

    // Step 8. fds 0..=3. Each source first goes to a fresh fd >= 4 so that
    // no dup2 clobbers a source still needed (the caller's fds may be
    // anywhere, even at 0..=3); the report pipe moves up for the same
    // reason. Then everything from 4 up is close-on-exec.
    if rfd < 4 {
        // SAFETY: fcntl F_DUPFD_CLOEXEC on our own open fd.
        let r = unsafe { libc::fcntl(rfd, libc::F_DUPFD_CLOEXEC, 4) };
        check!(Step::Fds, r as c_long);
        rfd = r;
    }
    let mut high = [0 as c_int; 4];
    for (h, &src) in high.iter_mut().zip(a.fd_sources.iter()) {
        // SAFETY: fcntl F_DUPFD_CLOEXEC on an fd the caller lent.
        let r = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 4) };
        check!(Step::Fds, r as c_long);
        *h = r;
    }
    for (target, &h) in high.iter().enumerate() {
        // SAFETY: dup3 between two open fds of this child (h >= 4 > target).
        let r = unsafe { libc::dup3(h, target as c_int, 0) };
        check!(Step::Fds, r as c_long);
    }
    // SAFETY: close_range marking fds close-on-exec; closes nothing now.
    let r = unsafe {
        sys(
            libc::SYS_close_range,
            [4, u32::MAX as usize, libc::CLOSE_RANGE_CLOEXEC as usize, 0, 0, 0],
        )
    };
    check!(Step::Fds, r);

    // Step 9. rlimits: no core dumps, a bounded fd table.
    let core = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nofile = libc::rlimit64 {
        rlim_cur: a.nofile,
        rlim_max: a.nofile,
    };
    for (resource, limit) in [(libc::RLIMIT_CORE, &core), (libc::RLIMIT_NOFILE, &nofile)] {
        // SAFETY: prlimit64 on ourselves with a live rlimit64.
        let r = unsafe {
            sys(
                libc::SYS_prlimit64,
                [0, resource as usize, limit as *const _ as usize, 0, 0, 0],
            )
        };
        check!(Step::Rlimits, r);
    }

    // Step 10. Empty the bounding set while we still hold CAP_SETPCAP.
    for cap in 0..=a.cap_last as usize {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { sys(libc::SYS_prctl, [libc::PR_CAPBSET_DROP as usize, cap, 0, 0, 0, 0]) };
        check!(Step::BoundingSet, r);
    }

    // Step 11. Credentials, gid before uid (after setresuid we could not).
    // SAFETY: setgroups with an empty list; setresgid/setresuid with
    // integers. Raw, so that only this task changes.
    let r = unsafe { sys(libc::SYS_setgroups, [0, 0, 0, 0, 0, 0]) };
    check!(Step::Credentials, r);
    let (g, u) = (a.gid as usize, a.uid as usize);
    // SAFETY: as above.
    let r = unsafe { sys(libc::SYS_setresgid, [g, g, g, 0, 0, 0]) };
    check!(Step::Credentials, r);
    // SAFETY: as above.
    let r = unsafe { sys(libc::SYS_setresuid, [u, u, u, 0, 0, 0]) };
    check!(Step::Credentials, r);

    // Step 12. Inheritable and ambient sets.
    let header = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this task
    let data = [0u32; 6]; // two __user_cap_data_struct, all zero
                          // SAFETY: capset with a live header and two zeroed data structs.
    let r = unsafe {
        sys(
            libc::SYS_capset,
            [header.as_ptr() as usize, data.as_ptr() as usize, 0, 0, 0, 0],
        )
    };
    check!(Step::Capabilities, r);
    let clear_ambient = [
        libc::PR_CAP_AMBIENT as usize,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as usize,
        0,
        0,
        0,
        0,
    ];
    // SAFETY: prctl with integer arguments.
    let r = unsafe { sys(libc::SYS_prctl, clear_ambient) };
    check!(Step::Capabilities, r);

    // Step 13. no_new_privs.
    // SAFETY: prctl with integer arguments.
    let r = unsafe { sys(libc::SYS_prctl, [libc::PR_SET_NO_NEW_PRIVS as usize, 1, 0, 0, 0, 0]) };
    check!(Step::NoNewPrivs, r);

    // Step 14. Unblock everything: the parent's mask (all blocked around
    // clone, and whatever it blocked before) must not reach the proc.
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask with a live 8-byte set.
    let r = unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, &empty as *const u64 as usize, 0, 8, 0, 0],
        )
    };
    check!(Step::SignalMask, r);
    stamp(&mut report);

    // Step 15. The seccomp program compiled once by the Sandbox.
    // SAFETY: seccomp with a sock_fprog pointing into the Sandbox's
    // program, alive while the parent waits.
    let r = unsafe {
        sys(
            libc::SYS_seccomp,
            [libc::SECCOMP_SET_MODE_FILTER as usize, 0, a.seccomp as usize, 0, 0, 0],
        )
    };
    check!(Step::Seccomp, r);
    stamp(&mut report);
    report.kind = REPORT_STAMPS;
    send(rfd, &report);

    // Step 16. Exec. On success the report pipe closes (close-on-exec) and
    // the parent reads EOF.
    // SAFETY: execve with NUL-terminated path and NULL-terminated arrays
    // of NUL-terminated strings, all the parent's.
    unsafe { libc::execve(c"/init".as_ptr(), a.argv, a.envp) };
    fail(rfd, &mut report, Step::Exec)
}
