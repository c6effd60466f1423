//! The seccomp policy of procs, as data: one [`Entry`] per syscall a proc
//! may make, each with the reason it is there. Anything not listed fails
//! with EPERM. The test `tests/policy.rs` runs the example procs under
//! strace and fails when this table allows a syscall none of them makes or
//! lacks one they make.
//!
//! Among what is refused: `socket`, `socketpair`, `bind`, `listen`,
//! `connect` (procs get sockets from sigmad over fd 3), `io_uring_setup`
//! (io_uring operations bypass seccomp; sigmad hands procs restricted
//! rings), `ptrace`, `process_vm_readv`/`writev`, `mount`, `umount2`,
//! `pivot_root`, `unshare`, `setns`, `bpf`, `perf_event_open`, `keyctl`,
//! `userfaultfd`, `kill` and `setuid`.
//!
//! Two syscalls need arguments checked: `clone` is allowed only without
//! namespace flags, and `prlimit64` only to read a limit. `clone3` passes
//! its flags in memory, which seccomp cannot read, so it is answered
//! ENOSYS: glibc then falls back to `clone`, whose flags are checked.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// What the filter does with one syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed whatever its arguments.
    Allow,
    /// `clone` without any namespace flag.
    AllowCloneWithoutNamespaces,
    /// `prlimit64` with a null new limit: reading only.
    AllowPrlimitRead,
    /// Fails with ENOSYS, so that libc falls back to a checkable syscall.
    Enosys,
}

/// One syscall of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its name, as strace prints it.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// What the filter does with it.
    pub verdict: Verdict,
    /// Who needs it.
    pub reason: &'static str,
}

/// The namespace flags `clone` may not carry. `CLONE_NEWTIME` is absent:
/// clone(2) reads that bit as part of the exit signal, and only clone3 and
/// unshare (both refused) can create a time namespace.
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

macro_rules! entry {
    ($name:ident, $verdict:ident, $reason:literal) => {
        Entry {
            name: stringify!($name),
            nr: paste_sys!($name),
            verdict: Verdict::$verdict,
            reason: $reason,
        }
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! paste_sys {
    (read) => {
        libc::SYS_read
    };
    (write) => {
        libc::SYS_write
    };
    (close) => {
        libc::SYS_close
    };
    (openat) => {
        libc::SYS_openat
    };
    (newfstatat) => {
        libc::SYS_newfstatat
    };
    (statx) => {
        libc::SYS_statx
    };
    (getdents64) => {
        libc::SYS_getdents64
    };
    (readlink) => {
        libc::SYS_readlink
    };
    (getcwd) => {
        libc::SYS_getcwd
    };
    (poll) => {
        libc::SYS_poll
    };
    (recvmsg) => {
        libc::SYS_recvmsg
    };
    (brk) => {
        libc::SYS_brk
    };
    (mmap) => {
        libc::SYS_mmap
    };
    (munmap) => {
        libc::SYS_munmap
    };
    (mprotect) => {
        libc::SYS_mprotect
    };
    (madvise) => {
        libc::SYS_madvise
    };
    (clone) => {
        libc::SYS_clone
    };
    (clone3) => {
        libc::SYS_clone3
    };
    (futex) => {
        libc::SYS_futex
    };
    (set_robust_list) => {
        libc::SYS_set_robust_list
    };
    (rseq) => {
        libc::SYS_rseq
    };
    (set_tid_address) => {
        libc::SYS_set_tid_address
    };
    (gettid) => {
        libc::SYS_gettid
    };
    (sched_getaffinity) => {
        libc::SYS_sched_getaffinity
    };
    (exit) => {
        libc::SYS_exit
    };
    (exit_group) => {
        libc::SYS_exit_group
    };
    (execve) => {
        libc::SYS_execve
    };
    (arch_prctl) => {
        libc::SYS_arch_prctl
    };
    (prlimit64) => {
        libc::SYS_prlimit64
    };
    (rt_sigaction) => {
        libc::SYS_rt_sigaction
    };
    (rt_sigprocmask) => {
        libc::SYS_rt_sigprocmask
    };
    (sigaltstack) => {
        libc::SYS_sigaltstack
    };
    (getrandom) => {
        libc::SYS_getrandom
    };
    (clock_nanosleep) => {
        libc::SYS_clock_nanosleep
    };
}

/// The policy of every proc on x86_64.
#[cfg(target_arch = "x86_64")]
pub const PROC_POLICY: &[Entry] = &[
    // Files: only fds the proc was given, /proc of its own pid namespace,
    // and its read-only jail.
    entry!(read, Allow, "reading fds: control socket, pipes, /proc files"),
    entry!(write, Allow, "writing fds: stdout, stderr, the control socket"),
    entry!(close, Allow, "closing fds"),
    entry!(openat, Allow, "opening /proc/self files (std::fs, glibc)"),
    entry!(newfstatat, Allow, "std::fs metadata and read_to_string's size hint"),
    entry!(statx, Allow, "std::fs metadata (tried before newfstatat)"),
    entry!(getdents64, Allow, "std::fs::read_dir"),
    entry!(readlink, Allow, "static glibc start-up reads /proc/self/exe"),
    entry!(getcwd, Allow, "std::env::current_dir"),
    entry!(poll, Allow, "Rust std start-up checks that fds 0-2 are open"),
    entry!(
        recvmsg,
        Allow,
        "receiving fds from sigmad by SCM_RIGHTS on fd 3 (dial, rings)"
    ),
    // Memory.
    entry!(brk, Allow, "malloc's heap"),
    entry!(mmap, Allow, "malloc's large blocks, thread stacks"),
    entry!(munmap, Allow, "freeing large blocks and thread stacks"),
    entry!(mprotect, Allow, "guard pages of thread stacks, glibc start-up"),
    entry!(madvise, Allow, "malloc and thread exit give memory back"),
    // Threads.
    entry!(
        clone,
        AllowCloneWithoutNamespaces,
        "threads (glibc falls back from clone3) and fork"
    ),
    entry!(clone3, Enosys, "tried first by glibc's pthread_create: answered ENOSYS"),
    entry!(futex, Allow, "locks, condition variables, thread join"),
    entry!(set_robust_list, Allow, "glibc at start-up and per thread"),
    entry!(rseq, Allow, "glibc registers restartable sequences per thread"),
    entry!(set_tid_address, Allow, "glibc start-up"),
    entry!(gettid, Allow, "Rust std thread ids"),
    entry!(sched_getaffinity, Allow, "glibc and std::thread::available_parallelism"),
    entry!(exit, Allow, "thread exit"),
    entry!(exit_group, Allow, "process exit"),
    // Process start.
    entry!(execve, Allow, "the sandbox's own exec of /init, made under the filter"),
    entry!(arch_prctl, Allow, "static glibc sets up thread-local storage"),
    entry!(
        prlimit64,
        AllowPrlimitRead,
        "Rust std reads the stack limit; raising is refused"
    ),
    // Signals.
    entry!(
        rt_sigaction,
        Allow,
        "Rust std ignores SIGPIPE and installs its overflow handlers"
    ),
    entry!(rt_sigprocmask, Allow, "glibc blocks signals around thread creation"),
    entry!(sigaltstack, Allow, "Rust std's stack-overflow handler, per thread"),
    // Time and randomness.
    entry!(getrandom, Allow, "HashMap seeds, glibc malloc"),
    entry!(clock_nanosleep, Allow, "std::thread::sleep"),
];

/// No policy table exists for other architectures yet; [`compile`] says
/// so instead of guessing.
#[cfg(not(target_arch = "x86_64"))]
pub const PROC_POLICY: &[Entry] = &[];

/// Builds the BPF program of [`PROC_POLICY`]: a short prefix answering
/// ENOSYS to `clone3`, then seccompiler's allow-list with EPERM for
/// everything else. Compiled once per [`crate::Sandbox`] and installed by
/// every child with one seccomp(2) call.
pub fn compile() -> Result<BpfProgram> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().map_err(|_| Error::SeccompArch {
        arch: std::env::consts::ARCH,
    })?;
    if PROC_POLICY.is_empty() {
        return Err(Error::SeccompArch {
            arch: std::env::consts::ARCH,
        });
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut enosys = Vec::new();
    for entry in PROC_POLICY {
        let chain = match entry.verdict {
            Verdict::Allow => Vec::new(),
            Verdict::AllowCloneWithoutNamespaces => vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
                0,
            )
            .map_err(compile_err)?])
            .map_err(compile_err)?],
            Verdict::AllowPrlimitRead => vec![SeccompRule::new(vec![SeccompCondition::new(
                2,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::Eq,
                0,
            )
            .map_err(compile_err)?])
            .map_err(compile_err)?],
            Verdict::Enosys => {
                enosys.push(entry.nr);
                continue;
            }
        };
        let previous = rules.insert(entry.nr, chain);
        assert!(previous.is_none(), "syscall {} listed twice in the policy", entry.name);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(compile_err)?;
    let allow_list: BpfProgram = filter.try_into().map_err(compile_err)?;
    let mut program = enosys_prefix(arch, &enosys);
    program.extend(allow_list);
    assert!(
        program.len() <= usize::from(u16::MAX),
        "BPF program longer than the kernel accepts"
    );
    Ok(program)
}

fn compile_err(e: impl Into<seccompiler::Error>) -> Error {
    Error::SeccompCompile { source: e.into() }
}

/// BPF instructions that return ENOSYS for each of `nrs` on `arch`, and
/// fall through to what follows for everything else (including another
/// architecture: the allow-list that follows kills those).
fn enosys_prefix(arch: seccompiler::TargetArch, nrs: &[i64]) -> BpfProgram {
    use seccompiler::sock_filter;
    const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Offsets in struct seccomp_data.
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    let audit_arch = match arch {
        seccompiler::TargetArch::x86_64 => 0xC000_003E,
        seccompiler::TargetArch::aarch64 => 0xC000_00B7,
        seccompiler::TargetArch::riscv64 => 0xC000_00F3,
    };
    let stmt = |code, k| sock_filter { code, jt: 0, jf: 0, k };
    let jeq = |k, jt, jf| sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    };
    // Layout: [ld arch] [jeq arch ? next : end] [ld nr] ([jeq nr ? ret : next])* [ret ENOSYS]
    // with "end" the first instruction after the prefix.
    let n = nrs.len();
    assert!(n < 200, "too many ENOSYS syscalls for 8-bit jumps");
    let mut prog = Vec::with_capacity(n + 4);
    prog.push(stmt(BPF_LD_W_ABS, ARCH_OFFSET));
    // Skip the nr load, the n comparisons and the return.
    prog.push(jeq(audit_arch, 0, (n + 2) as u8));
    prog.push(stmt(BPF_LD_W_ABS, NR_OFFSET));
    for (i, &nr) in nrs.iter().enumerate() {
        let nr = u32::try_from(nr).expect("syscall numbers are small");
        let to_ret = (n - 1 - i) as u8;
        // Not this one: the next comparison, or past the return after the last.
        let next = if i + 1 == n { 1 } else { 0 };
        prog.push(jeq(nr, to_ret, next));
    }
    if n == 0 {
        // Nothing to answer: fall through at once.
        prog.truncate(0);
        return prog;
    }
    prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_with_one_entry_per_syscall_and_a_reason_each() {
        let program = compile().expect("policy compiles");
        assert!(!program.is_empty());
        let mut seen = std::collections::HashSet::new();
        for e in PROC_POLICY {
            assert!(seen.insert(e.nr), "{} listed twice", e.name);
            assert!(!e.reason.is_empty(), "{} has no reason", e.name);
        }
    }

    #[test]
    fn forbidden_syscalls_are_absent() {
        for nr in [
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_connect,
            libc::SYS_io_uring_setup,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_keyctl,
            libc::SYS_userfaultfd,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ] {
            assert!(PROC_POLICY.iter().all(|e| e.nr != nr), "syscall {nr} is allowed");
        }
    }
}
