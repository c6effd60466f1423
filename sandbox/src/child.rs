//! What runs in the cloned child between clone and exec: the steps of the
//! spawn sequence, in order, each a raw system call (or a few) whose
//! failure is reported to the parent as `(step, errno)` on the report pipe.
//!
//! The child shares the parent's memory (CLONE_VM) and runs on its own
//! small stack. For a spawn the parent's thread waits meanwhile
//! (CLONE_VFORK), exactly like posix_spawn; a warm sandbox's child runs
//! beside it, waiting for the spawn that will take it. So it must not
//! allocate, take locks, or call anything but raw system calls (which
//! leave errno, in the parent thread's thread-local storage, alone):
//! every string and array it needs was built by the parent beforehand, in
//! [`ChildArgs`]. Raw syscalls also keep credential changes to this task
//! (glibc's `setresuid` would broadcast to the parent's other threads).

use std::ffi::{c_char, c_int, c_long, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::limits;

/// The steps of the child, in order. The number is what travels on the
/// report pipe; [`crate::Error`] has one `Child*` variant per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Close every fd of the parent's table copy that no step uses.
    Inherited = 1,
    /// Set every signal to its default disposition (all are still blocked,
    /// as the parent blocked them around clone).
    Signals,
    /// Join the proc's cgroups by writing 0 to each join file the parent
    /// opened (v1 `tasks`, v2 `cgroup.procs`).
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
    /// A warm sandbox only: wait for the spawn that takes it, which sends
    /// fds 0..=3 (they land there: nothing else is open below 4).
    Request,
    /// execve `/init`.
    Exec,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 18] = [
        Step::Inherited,
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
        Step::Request,
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

/// Report kinds on the pipe (or, for a warm sandbox, its channel).
pub const REPORT_STAMPS: u32 = 1;
/// A step failed; `step` and `errno` say which and why.
pub const REPORT_FAILED: u32 = 2;
/// A warm sandbox has done every step up to [`Step::Request`] and waits.
pub const REPORT_READY: u32 = 3;

/// The one byte-string a spawn sends a warm sandbox with its fds.
pub const REQUEST_GO: u64 = 0x5349_474d_4120_474f; // "SIGMA GO"

/// One record on the report pipe. Written whole (well under PIPE_BUF, so
/// atomically).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Report {
    /// [`REPORT_STAMPS`], [`REPORT_FAILED`] or [`REPORT_READY`].
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
/// points into memory the parent keeps alive and unchanged until the child
/// has exec'd or exited: for a spawn, until clone returns (the parent is
/// suspended meanwhile); for a warm sandbox, for as long as it lives.
#[derive(Debug)]
#[repr(C)]
pub struct ChildArgs {
    pub report_fd: c_int,
    /// A warm sandbox's end of its channel (a SOCK_SEQPACKET pair), or -1
    /// for a spawn. With one, the child reports on it, keeps nothing else
    /// open, and after the seccomp step waits on it for the spawn that
    /// takes it ([`Step::Request`]).
    pub channel_fd: c_int,
    pub cgroup_fds: [c_int; 3],
    pub cgroup_fds_count: usize,
    pub netns_fd: c_int,
    pub hostname: *const c_char,
    pub hostname_len: usize,
    /// The sandbox's jail template mount namespace.
    pub jail_template_fd: c_int,
    /// The binary as a detached mount (open_tree OPEN_TREE_CLONE).
    pub binary_tree_fd: c_int,
    /// Sources of fds 0, 1, 2, 3 (a spawn only: a warm sandbox receives
    /// them with the request).
    pub fd_sources: [c_int; 4],
    pub nofile: u64,
    pub cap_last: u32,
    /// Step 11 drops each capability up to `cap_last` from the bounding
    /// set; false when the cloning thread emptied its own already
    /// ([`crate::Sandbox::empty_thread_bounding_set`]), whose credentials the
    /// child starts with.
    pub drop_bounding_set: bool,
    pub uid: u32,
    pub gid: u32,
    pub seccomp: *const libc::sock_fprog,
    /// Set before clone for a spawn; for a warm sandbox, by the spawn that
    /// takes it, before it sends the request (the child loads them after
    /// receiving it: the send and receive order the stores before the
    /// loads, and the atomics say so to the compiler).
    pub argv: AtomicPtr<*const c_char>,
    pub envp: AtomicPtr<*const c_char>,
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
        sys(
            libc::SYS_write,
            [
                fd as usize,
                (report as *const Report) as usize,
                std::mem::size_of::<Report>(),
                0,
                0,
                0,
            ],
        )
    };
}

/// Reports `step` failed with the errno of the raw return value `ret`
/// (`-errno`); the value is the child's exit code.
fn fail(fd: c_int, report: &mut Report, step: Step, ret: c_long) -> c_int {
    report.errno = (-ret) as i32;
    report.kind = REPORT_FAILED;
    report.step = step as u32;
    send(fd, report);
    127
}

/// move_mount(2): the same number on every architecture.
const SYS_MOVE_MOUNT: c_long = 429;
/// move_mount's flag: the source is the fd itself.
const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;

/// Raw syscall with six arguments: the kernel's return value, `-errno` on
/// failure. It never touches `errno`: the child runs on the parent
/// thread's thread-local storage (no CLONE_SETTLS), and a warm sandbox's
/// child runs while that thread goes on, so neither may write there.
///
/// # Safety
///
/// The arguments must be what syscall `nr` expects: pointers valid for the
/// access the kernel makes through them.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn sys(nr: c_long, a: [usize; 6]) -> c_long {
    let ret: c_long;
    // SAFETY: the x86_64 syscall convention (rax number and result; rdi,
    // rsi, rdx, r10, r8, r9 arguments; rcx and r11 clobbered); the caller
    // vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Raw syscall with six arguments (through libc here, so it reads errno:
/// warm sandboxes are x86_64 only, see [`crate::Sandbox::prepare`]).
///
/// # Safety
///
/// As on x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn sys(nr: c_long, a: [usize; 6]) -> c_long {
    // SAFETY: the caller vouches for the arguments.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        // SAFETY: the calling thread's errno.
        -(unsafe { *libc::__errno_location() }) as c_long
    } else {
        r
    }
}

/// The child: runs every step, then execs. Returns (and so exits with) 127
/// only on failure, after reporting which step failed; a warm sandbox
/// whose channel closes before a request comes returns 0.
pub extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive and unchanged (but
    // for the atomics) while this child runs before exec.
    let a = unsafe { &*(arg as *const ChildArgs) };
    let mut report = Report::default();
    let warm = a.channel_fd >= 0;
    let mut rfd = if warm { a.channel_fd } else { a.report_fd };
    stamp(&mut report);
    macro_rules! check {
        ($step:expr, $ret:expr) => {
            let ret: c_long = $ret;
            if ret < 0 {
                return fail(rfd, &mut report, $step, ret);
            }
        };
    }
    // `sys` with fewer arguments. Safety: as `sys`.
    macro_rules! sys {
        ($nr:expr $(, $arg:expr)*) => {{
            let mut a = [0usize; 6];
            let given = [$($arg as usize),*];
            a[..given.len()].copy_from_slice(&given);
            sys($nr, a)
        }};
    }

    // Step 1. Close every inherited fd no step uses. The child was cloned
    // with a copy of the parent's whole fd table. Each copy keeps its file
    // open, and whoever closes the last reference pays the file's teardown:
    // for a proc's mount namespace that the parent held and has let go of
    // since, unmounting its jail and an expedited RCU grace period. Closed
    // here, at once, the copies seldom outlive the parent's own; closed at
    // step 9 (a warm sandbox) or at exec (close-on-exec), they often did,
    // and the child, ready later, or the proc, started later, paid.
    {
        // The report fd or channel, netns, template and tree; the cgroup
        // join files; the four fd sources: every fd `a` names, at most.
        let mut keep = [-1 as c_int; 4 + 3 + 4];
        let mut n = 0;
        let needed = [rfd, a.netns_fd, a.jail_template_fd, a.binary_tree_fd]
            .into_iter()
            .chain(a.cgroup_fds.iter().take(a.cgroup_fds_count).copied())
            .chain(a.fd_sources);
        for fd in needed {
            if fd >= 0 && n < keep.len() {
                // Insertion in order.
                let mut i = n;
                while i > 0 && keep[i - 1] > fd {
                    keep[i] = keep[i - 1];
                    i -= 1;
                }
                keep[i] = fd;
                n += 1;
            }
        }
        let mut low = 0 as c_int;
        for &fd in &keep[..n] {
            if fd > low {
                // SAFETY: close_range on this child's own table copy.
                check!(Step::Inherited, unsafe { sys!(libc::SYS_close_range, low, fd - 1, 0) });
            }
            low = low.max(fd + 1);
        }
        // SAFETY: as above.
        check!(Step::Inherited, unsafe {
            sys!(libc::SYS_close_range, low, u32::MAX, 0)
        });
    }

    // Step 2. Default dispositions. Handlers would die at exec anyway, but
    // ignored signals survive it, and the parent's handlers must never run
    // here once signals are unblocked. SIGKILL and SIGSTOP cannot change.
    let dfl = [0usize; 4]; // kernel sigaction: handler SIG_DFL, flags, restorer, mask
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        // SAFETY: rt_sigaction with a live kernel-layout sigaction and the
        // kernel's 8-byte sigset size.
        check!(Step::Signals, unsafe {
            sys!(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0, 8)
        });
    }

    // Step 3. Join the proc's cgroups: "0" is the writer itself, whatever
    // its pid namespace.
    for &fd in a.cgroup_fds.iter().take(a.cgroup_fds_count) {
        // SAFETY: writes one byte from a static string to an fd the parent
        // opened.
        check!(Step::Cgroups, unsafe { sys!(libc::SYS_write, fd, c"0".as_ptr(), 1) });
    }
    stamp(&mut report);

    // Step 4. The realm's network namespace.
    // SAFETY: setns on an fd of a network namespace the realm keeps open.
    check!(Step::Netns, unsafe {
        sys!(libc::SYS_setns, a.netns_fd, libc::CLONE_NEWNET)
    });

    // Step 5. Hostname of the new UTS namespace.
    // SAFETY: the parent's NUL-terminated realm name and its length.
    check!(Step::Hostname, unsafe {
        sys!(libc::SYS_sethostname, a.hostname, a.hostname_len)
    });
    stamp(&mut report);

    // Step 6. The jail: enter the template mount namespace (root and cwd
    // become its read-only tmpfs root), then take a private copy of it.
    // No host mount is copied, so neither this nor the namespace's
    // teardown at exit walks the host's mount table.
    // SAFETY: setns on the sandbox's mount namespace fd.
    check!(Step::MountNamespace, unsafe {
        sys!(libc::SYS_setns, a.jail_template_fd, libc::CLONE_NEWNS)
    });
    // SAFETY: unshare with a flag.
    check!(Step::MountNamespace, unsafe {
        sys!(libc::SYS_unshare, libc::CLONE_NEWNS)
    });

    // Step 7. The binary, bound read-only at /init (no copy: a warm start
    // copies nothing). The bind carries the source's flags; the remount
    // applies ours.
    // SAFETY: move_mount of the parent's detached tree fd onto a static
    // NUL-terminated path.
    check!(Step::JailBinary, unsafe {
        sys!(
            SYS_MOVE_MOUNT,
            a.binary_tree_fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/init".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH
        )
    });
    let nosuid_nodev = (libc::MS_NOSUID | libc::MS_NODEV) as usize;
    let ro_bind = (libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY) as usize | nosuid_nodev;
    // SAFETY: mount with static NUL-terminated strings.
    check!(Step::JailBinary, unsafe {
        sys!(libc::SYS_mount, 0, c"/init".as_ptr(), 0, ro_bind)
    });

    // Step 8. /proc of the new pid namespace, pids only: no host-wide
    // files (meminfo, sys, sysrq-trigger) in the jail.
    // SAFETY: mount with static NUL-terminated strings.
    check!(Step::JailProc, unsafe {
        sys!(
            libc::SYS_mount,
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            nosuid_nodev | libc::MS_NOEXEC as usize,
            c"subset=pid".as_ptr()
        )
    });
    stamp(&mut report);

    // Step 9, warm sandbox: close every fd but the channel, which goes
    // to 4: step 1 left open only the fds the steps used, and the
    // request's fds are to land at 0..=3.
    if warm {
        // SAFETY: fcntl, close_range, dup3 and close on fds of this
        // child's own table.
        unsafe {
            let high = sys!(libc::SYS_fcntl, rfd, libc::F_DUPFD_CLOEXEC, 5);
            check!(Step::Fds, high);
            check!(Step::Fds, sys!(libc::SYS_close_range, 0, high - 1, 0));
            check!(Step::Fds, sys!(libc::SYS_close_range, high + 1, u32::MAX, 0));
            rfd = high as c_int;
            check!(Step::Fds, sys!(libc::SYS_dup3, high, 4, libc::O_CLOEXEC));
            rfd = 4;
            check!(Step::Fds, sys!(libc::SYS_close, high));
        }
    }

    // Step 9. fds 0..=3 (a warm sandbox receives them with its request).
    // Each source first goes to a fresh fd >= 4 so that no dup2 clobbers
    // a source still needed (the caller's fds may be anywhere, even at
    // 0..=3); the report pipe moves up for the same reason. Then
    // everything from 4 up is close-on-exec.
    if !warm {
        if rfd < 4 {
            // SAFETY: fcntl F_DUPFD_CLOEXEC on our own open fd.
            let r = unsafe { sys!(libc::SYS_fcntl, rfd, libc::F_DUPFD_CLOEXEC, 4) };
            check!(Step::Fds, r);
            rfd = r as c_int;
        }
        let mut high = [0 as c_int; 4];
        for (h, &src) in high.iter_mut().zip(a.fd_sources.iter()) {
            // SAFETY: fcntl F_DUPFD_CLOEXEC on an fd the caller lent.
            let r = unsafe { sys!(libc::SYS_fcntl, src, libc::F_DUPFD_CLOEXEC, 4) };
            check!(Step::Fds, r);
            *h = r as c_int;
        }
        for (target, &h) in high.iter().enumerate() {
            // SAFETY: dup3 between two open fds of this child (h >= 4 > target).
            check!(Step::Fds, unsafe { sys!(libc::SYS_dup3, h, target, 0) });
        }
        // SAFETY: close_range marking fds close-on-exec; closes nothing now.
        check!(Step::Fds, unsafe {
            sys!(libc::SYS_close_range, 4, u32::MAX, libc::CLOSE_RANGE_CLOEXEC)
        });
    }

    // Step 10. rlimits: no core dumps, a bounded fd table.
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
        check!(Step::Rlimits, unsafe {
            sys!(libc::SYS_prlimit64, 0, resource, limit as *const libc::rlimit64)
        });
    }

    // Step 11. Empty the bounding set while we still hold CAP_SETPCAP
    // (unless it came empty from the cloning thread).
    let drops = if a.drop_bounding_set {
        a.cap_last as usize + 1
    } else {
        0
    };
    for cap in 0..drops {
        // SAFETY: prctl with integer arguments.
        check!(Step::BoundingSet, unsafe {
            sys!(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap)
        });
    }

    // Step 12. Credentials, gid before uid (after setresuid we could not).
    // SAFETY: setgroups with an empty list; setresgid/setresuid with
    // integers. Raw, so that only this task changes.
    check!(Step::Credentials, unsafe { sys!(libc::SYS_setgroups, 0, 0) });
    let (g, u) = (a.gid as usize, a.uid as usize);
    // SAFETY: as above.
    check!(Step::Credentials, unsafe { sys!(libc::SYS_setresgid, g, g, g) });
    // SAFETY: as above.
    check!(Step::Credentials, unsafe { sys!(libc::SYS_setresuid, u, u, u) });

    // Step 13. Inheritable and ambient sets.
    let header = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this task
    let data = [0u32; 6]; // two __user_cap_data_struct, all zero
                          // SAFETY: capset with a live header and two zeroed data structs.
    check!(Step::Capabilities, unsafe {
        sys!(libc::SYS_capset, header.as_ptr(), data.as_ptr())
    });
    // SAFETY: prctl with integer arguments.
    check!(Step::Capabilities, unsafe {
        sys!(libc::SYS_prctl, libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL)
    });

    // Step 14. no_new_privs.
    // SAFETY: prctl with integer arguments.
    check!(Step::NoNewPrivs, unsafe {
        sys!(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1)
    });

    // Step 15. Unblock everything: the parent's mask (all blocked around
    // clone, and whatever it blocked before) must not reach the proc.
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask with a live 8-byte set.
    check!(Step::SignalMask, unsafe {
        sys!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty as *const u64, 0, 8)
    });
    stamp(&mut report);

    // Step 16. The seccomp program compiled once by the Sandbox.
    // SAFETY: seccomp with a sock_fprog pointing into the Sandbox's
    // program, alive while the parent waits.
    check!(Step::Seccomp, unsafe {
        sys!(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, a.seccomp)
    });
    stamp(&mut report);

    if warm {
        // Ready: the spawn that takes this sandbox sends fds 0..=3 and
        // REQUEST_GO. Everything from here on runs under the filter, with
        // syscalls every proc may make (recvmsg, write, execve, exit).
        report.kind = REPORT_READY;
        send(rfd, &report);
        match receive_request(rfd) {
            Ok(true) => {}
            // The channel closed: nobody will take this sandbox.
            Ok(false) => return 0,
            Err(ret) => return fail(rfd, &mut report, Step::Request, ret),
        }
        // Only the moment of the request is this spawn's.
        report.stamps = [0; limits::CHILD_STAMPS_COUNT];
        report.stamps_count = limits::CHILD_STAMPS_COUNT as u32;
        report.stamps[limits::CHILD_STAMPS_COUNT - 1] = crate::monotonic_ns();
    }
    report.kind = REPORT_STAMPS;
    send(rfd, &report);

    // Step 17. Exec. On success the report pipe closes (close-on-exec) and
    // the parent reads EOF.
    let argv = a.argv.load(Ordering::Acquire);
    let envp = a.envp.load(Ordering::Acquire);
    // SAFETY: execve with a NUL-terminated path and NULL-terminated arrays
    // of NUL-terminated strings, all the parent's, alive until it sees
    // the exec.
    let r = unsafe { sys!(libc::SYS_execve, c"/init".as_ptr(), argv, envp) };
    fail(rfd, &mut report, Step::Exec, r)
}

/// A warm sandbox waits on its channel for [`REQUEST_GO`] with exactly
/// four fds, which land at 0..=3 (fd 4 is the channel, nothing else is
/// open). `Ok(false)`: the channel closed. `Err(-errno)`: a broken request.
// The lengths are size_t on glibc but not on every libc.
#[allow(clippy::unnecessary_cast)]
fn receive_request(channel: c_int) -> Result<bool, c_long> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const FDS: usize = 4 * std::mem::size_of::<c_int>();
    let mut go: u64 = 0;
    let mut iov = libc::iovec {
        iov_base: (&mut go as *mut u64).cast(),
        iov_len: std::mem::size_of::<u64>(),
    };
    // Room for the four fds' message and more: a request with more fds
    // is refused, not truncated silently. u64 for the header's alignment.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: recvmsg into the live locals above.
        let n = unsafe {
            sys(
                libc::SYS_recvmsg,
                [channel as usize, (&mut msg as *mut libc::msghdr) as usize, 0, 0, 0, 0],
            )
        };
        if n != -(libc::EINTR as c_long) {
            break n;
        }
    };
    if n < 0 {
        return Err(n);
    }
    if n == 0 {
        return Ok(false);
    }
    let bad = -(libc::EBADMSG as c_long);
    if n as usize != std::mem::size_of::<u64>() || go != REQUEST_GO || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(bad);
    }
    if msg.msg_controllen as usize != HDR + FDS {
        return Err(bad);
    }
    // SAFETY: the kernel wrote exactly HDR + FDS bytes of control data
    // into `control` (8-byte aligned, as cmsghdr needs).
    let (hdr, fds) = unsafe {
        let hdr = std::ptr::read(control.as_ptr().cast::<libc::cmsghdr>());
        let fds = std::ptr::read_unaligned(control.as_ptr().cast::<u8>().add(HDR).cast::<[c_int; 4]>());
        (hdr, fds)
    };
    if hdr.cmsg_level != libc::SOL_SOCKET
        || hdr.cmsg_type != libc::SCM_RIGHTS
        || hdr.cmsg_len as usize != HDR + FDS
        || fds != [0, 1, 2, 3]
    {
        return Err(bad);
    }
    Ok(true)
}
