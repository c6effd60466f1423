//! Warm sandboxes: σcontainers made ahead of the spawn that takes them.
//!
//! [`crate::Sandbox::prepare`] clones a child for a realm, a class and a
//! binary, and the child runs every step of the spawn sequence that does
//! not depend on the spawn (all but the fds, the arguments and the
//! limits' values) while the caller goes on: its own pid, UTS and IPC
//! namespaces, the realm's netns, its jail with the binary at `/init`,
//! its cgroups, rlimits, the realm's uid and gid, no capabilities,
//! no_new_privs, the seccomp filter. Then it reports ready on its channel
//! (a SOCK_SEQPACKET pair) and waits in `recvmsg`: the only fd it has
//! open is the channel, at 4.
//!
//! A spawn of the same binary, realm and class takes it: it writes the
//! proc's limits into its cgroups, stores argv and envp where the child
//! reads them, and sends [`child::REQUEST_GO`] with fds 0..=3
//! (SCM_RIGHTS; they land at 0..=3 in the child). The child execs at once.
//! What the start costs is one wake-up and the exec.
//!
//! The child shares sigmad's memory (CLONE_VM, like every spawn's child)
//! but, unlike a spawn's, runs beside the thread that made it (no
//! CLONE_VFORK). So it runs raw syscalls only (never errno, in that
//! thread's TLS), on its own stack, reading only what this module keeps
//! alive and unchanged for as long as it may run ([`WarmArgs`]; argv and
//! envp are atomics, stored before the request is sent). It uses no
//! syscall the proc could not make itself once its filter is installed
//! (recvmsg, write, execve), so the filter is installed before it waits.
//!
//! Until it execs, the child's memory is sigmad's: its pages are charged
//! to sigmad's memory cgroup (its own proc cgroups hold its task and
//! nothing else), and its `/proc/PID/mem` is sigmad's memory, which the
//! kernel lets only CAP_SYS_PTRACE read (the memory is non-dumpable once
//! the child changed its uid), and which no proc can name (it is pid 1 of
//! its own pid namespace).
//!
//! A warm sandbox is one proc's: taken once, never reused. Dropping one
//! (its realm goes, the realm holds too many, the sandbox goes) kills and
//! reaps its child before its memory is freed; if the child cannot be
//! reaped within [`limits::CHILD_DROP_WAIT_MS_MAX`], its stack and
//! arguments are leaked instead of freed. If sigmad dies, the channel
//! closes and the child exits on its own.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use crate::child::{self, ChildArgs};
use crate::limits;
use crate::sandbox::{self, ChildStack, ProcCgroups};

/// What a warm sandbox's child reads: its arguments and the filter's
/// header. Boxed, so that it never moves while the child may read it.
pub(crate) struct WarmArgs {
    pub(crate) args: ChildArgs,
    pub(crate) fprog: libc::sock_fprog,
}

/// One warm sandbox: a child waiting for its spawn.
pub(crate) struct Prepared {
    /// What it was made for: the binary's path and the class (LC or BE).
    pub(crate) binary: PathBuf,
    /// The (device, inode) bound at `/init`: a spawn takes it only if its
    /// binary's path names this inode.
    pub(crate) inode: (u64, u64),
    pub(crate) lc: bool,
    pub(crate) pid: i32,
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) channel: OwnedFd,
    pub(crate) cgroups: Option<ProcCgroups>,
    /// The child's stack and arguments: `None` once handed back (after
    /// the child exec'd or was reaped).
    pub(crate) stack: Option<ChildStack>,
    pub(crate) args: Option<Box<WarmArgs>>,
}

// SAFETY: the raw pointers in `args` point into the sandbox's seccomp
// program and the realm's name, which outlive every warm sandbox of the
// realm (the realm drops its warm sandboxes first, and holds the sandbox);
// nothing is reached through them on this side.
unsafe impl Send for Prepared {}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("binary", &self.binary)
            .field("lc", &self.lc)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Why a warm sandbox could not start a proc.
pub(crate) enum NotStarted {
    /// It was not usable (its child died or failed a step before the
    /// request): the spawn goes the cold way, which reports any real error.
    Unusable,
    /// The request was sent and a step after it failed: the spawn's error.
    Failed(crate::Error),
}

impl Prepared {
    /// Whether it was made for `binary` and class `lc`.
    pub(crate) fn is_for(&self, binary: &std::path::Path, lc: bool) -> bool {
        self.lc == lc && self.binary == binary
    }

    /// Waits for the child's ready report (at most
    /// [`limits::CHILD_DROP_WAIT_MS_MAX`]; a spawn takes a warm sandbox
    /// once, so this runs once). False if the child failed a step, died, or
    /// is still not ready.
    pub(crate) fn wait_ready(&self) -> bool {
        let fd = self.channel.as_raw_fd();
        let until = std::time::Instant::now() + Duration::from_millis(limits::CHILD_DROP_WAIT_MS_MAX);
        loop {
            match sandbox::poll_readable(fd, until.saturating_duration_since(std::time::Instant::now())) {
                Ok(true) => break,
                Ok(false) if std::time::Instant::now() < until => continue,
                _ => return false,
            }
        }
        matches!(sandbox::read_report(&self.channel), Ok(Some(r)) if r.kind == child::REPORT_READY)
    }

    /// The pidfd and stack, once its child has exec'd (it no longer runs on
    /// the stack or reads its arguments); the rest goes with `self`.
    pub(crate) fn hand_over(mut self) -> (OwnedFd, Option<ChildStack>) {
        self.args = None;
        let pidfd = self.pidfd.take().expect("a prepared sandbox has its pidfd");
        (pidfd, self.stack.take())
    }

    /// Stores argv and envp for the child and sends the request with fds
    /// `fds` (they become 0..=3). The child execs; the caller reads the
    /// channel until EOF (exec'd) or a failure report.
    pub(crate) fn request(
        &self,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
        fds: [c_int; 4],
    ) -> io::Result<()> {
        let args = self.args.as_ref().expect("a prepared sandbox has its arguments");
        args.args.argv.store(argv as *mut _, Ordering::Release);
        args.args.envp.store(envp as *mut _, Ordering::Release);
        const FDS: usize = 4 * std::mem::size_of::<c_int>();
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut control = [0u64; 8];
        let go = child::REQUEST_GO;
        let mut iov = libc::iovec {
            iov_base: (&go as *const u64).cast_mut().cast(),
            iov_len: std::mem::size_of::<u64>(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = (hdr + FDS) as _;
        // SAFETY: the control buffer is 64 bytes, 8-aligned: room for one
        // cmsghdr and four fds, written in place.
        unsafe {
            let cmsg = control.as_mut_ptr().cast::<libc::cmsghdr>();
            (*cmsg).cmsg_len = (hdr + FDS) as _;
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            std::ptr::write_unaligned(control.as_mut_ptr().cast::<u8>().add(hdr).cast::<[c_int; 4]>(), fds);
        }
        loop {
            // SAFETY: sendmsg from the live locals above on our channel.
            let n = unsafe { libc::sendmsg(self.channel.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n == std::mem::size_of::<u64>() as isize {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if n < 0 { e } else { io::Error::other("short send") });
        }
    }

    /// Kills the child and reaps it (bounded). True if it is reaped (or
    /// someone else reaped it).
    fn kill_and_reap(&mut self) -> bool {
        let Some(pidfd) = self.pidfd.take() else {
            return true;
        };
        let fd = pidfd.as_raw_fd();
        let _ = sandbox::pidfd_signal(fd, libc::SIGKILL);
        let until = std::time::Instant::now() + Duration::from_millis(limits::CHILD_DROP_WAIT_MS_MAX);
        loop {
            match sandbox::pidfd_try_reap(fd) {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                // ECHILD: someone else reaped it; it is gone either way.
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return true,
                Err(_) => {}
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = sandbox::poll_readable(fd, left.min(Duration::from_millis(100)));
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.args.is_none() {
            return; // handed over: the child exec'd or was reaped
        }
        if self.kill_and_reap() {
            // Its cgroups go with `cgroups`, its stack and arguments here.
            self.stack = None;
            self.args = None;
        } else {
            // It may still run on them: leak rather than free.
            std::mem::forget(self.stack.take());
            if let Some(args) = self.args.take() {
                Box::leak(args);
            }
        }
    }
}

/// A SOCK_SEQPACKET pair, close-on-exec: (ours, the child's).
pub(crate) fn channel() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
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
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// argv and envp as the atomics of [`ChildArgs`] hold them.
pub(crate) fn atomic(p: *const *const libc::c_char) -> AtomicPtr<*const libc::c_char> {
    AtomicPtr::new(p as *mut _)
}
