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

/// Builds the BPF program of [`PROC_POLICY`], compactly: an architecture
/// check, a binary search over the listed syscall numbers, and the two
/// argument checks. Compiled once per [`crate::Sandbox`] and installed by
/// every child with one seccomp(2) call.
///
/// **Why not seccompiler's program:** every proc start installs the filter,
/// and the install costs in proportion to the program. The kernel
/// JIT-compiles it, and then (`seccomp_cache_prepare`, with the task's
/// signal lock held and interrupts off) runs it once for every syscall
/// number of the architecture to find the ones it allows whatever their
/// arguments, which then skip the filter. seccompiler's code for this policy
/// is 185 instructions, a chain that number after number walks to its end
/// (up to 74 instructions); the chain of [`compile_linear`] is 52 (up to 39);
/// this search is 61 and walks at most 14. `cargo bench -p sigma-sandbox
/// --bench seccomp_install`, p50 of 300 installs each in forked children,
/// 2026-11-28: seccompiler's 131–133 µs, the chain 71–74 µs, the search
/// 39–43 µs, a one-instruction filter 12 µs. seccompiler's program stays
/// the reference: the tests run each program through a BPF interpreter on
/// every syscall number and argument case and require the same verdicts
/// ([`compile_reference`]).
pub fn compile() -> Result<BpfProgram> {
    compile_with_leaf(SEARCH_LEAF)
}

/// The same policy as [`compile`], as one comparison per syscall in a
/// chain: what `compile` built before its binary search, kept for the
/// benchmark and the tests.
pub fn compile_linear() -> Result<BpfProgram> {
    compile_with_leaf(usize::MAX)
}

/// The longest run of `jeq`s the search ends in: shorter runs take more
/// `jge` nodes (a longer program to JIT), longer ones a longer walk.
const SEARCH_LEAF: usize = 4;

/// Where a jump of the program being built goes.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// An instruction already placed, by index.
    At(usize),
    /// One of the shared tails, placed after the lookup.
    Tail(Tail),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    Eperm,
    Allow,
    Enosys,
    Kill,
    Clone,
    Prlimit,
}

/// One instruction before its jump offsets are known.
struct Insn {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

/// The program with the lookup ending in runs of at most `leaf` `jeq`s
/// (`usize::MAX`: one chain).
fn compile_with_leaf(leaf: usize) -> Result<BpfProgram> {
    let audit_arch = audit_arch()?;
    if PROC_POLICY.is_empty() {
        return Err(Error::SeccompArch {
            arch: std::env::consts::ARCH,
        });
    }
    let mut entries: Vec<&Entry> = PROC_POLICY.iter().collect();
    entries.sort_by_key(|e| e.nr);
    for pair in entries.windows(2) {
        assert!(
            pair[0].nr != pair[1].nr,
            "syscall {} listed twice in the policy",
            pair[0].name
        );
    }
    // Layout:
    //   0      ld arch
    //   1      jeq AUDIT_ARCH ? 2 : KILL
    //   2      ld nr
    //   3      jge X32_SYSCALL_BIT ? EPERM : 4     (the x32 ABI's numbers)
    //   4..    the lookup: each listed nr jumps to its verdict's tail, any
    //          other ends at EPERM
    //   EPERM  ret ERRNO(EPERM)
    //   ALLOW  ret ALLOW
    //   ENOSYS ret ERRNO(ENOSYS)
    //   KILL   ret KILL_PROCESS
    //   CLONE  ld args[0] (low word); jset NAMESPACE_FLAGS ? +1 : +0; ret ALLOW; ret EPERM
    //   PRLIM  ld args[2] low; jeq 0 ? +0 : (ret EPERM); ld args[2] high;
    //          jeq 0 ? +0 : +1; ret ALLOW; ret EPERM
    // (BPF jumps only forward, so the argument checks carry their own returns.)
    let mut prog: Vec<Insn> = Vec::with_capacity(3 * entries.len());
    let op = |code: u16, k: u32, jt: To, jf: To| Insn { code, k, jt, jf };
    let st = |code: u16, k: u32| Insn {
        code,
        k,
        jt: To::Next,
        jf: To::Next,
    };
    prog.push(st(BPF_LD_W_ABS, ARCH_OFFSET));
    prog.push(op(BPF_JEQ_K, audit_arch, To::Next, To::Tail(Tail::Kill)));
    prog.push(st(BPF_LD_W_ABS, NR_OFFSET));
    prog.push(op(BPF_JGE_K, X32_SYSCALL_BIT, To::Tail(Tail::Eperm), To::Next));
    lookup(&mut prog, &entries, leaf);
    let mut tails: Vec<(Tail, usize)> = Vec::with_capacity(6);
    let eperm_k = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    for (tail, k) in [
        (Tail::Eperm, eperm_k),
        (Tail::Allow, libc::SECCOMP_RET_ALLOW),
        (Tail::Enosys, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        (Tail::Kill, libc::SECCOMP_RET_KILL_PROCESS),
    ] {
        tails.push((tail, prog.len()));
        prog.push(st(BPF_RET_K, k));
    }
    // The namespace flags all lie in the low word of clone's flags.
    const _: () = assert!(CLONE_NAMESPACE_FLAGS >> 32 == 0);
    tails.push((Tail::Clone, prog.len()));
    let here = |prog: &Vec<Insn>, ahead: usize| To::At(prog.len() + ahead);
    prog.push(st(BPF_LD_W_ABS, ARGS_OFFSET));
    prog.push(op(BPF_JSET_K, CLONE_NAMESPACE_FLAGS as u32, here(&prog, 2), To::Next));
    prog.push(st(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    prog.push(st(BPF_RET_K, eperm_k));
    tails.push((Tail::Prlimit, prog.len()));
    prog.push(st(BPF_LD_W_ABS, ARGS_OFFSET + 2 * 8));
    prog.push(op(BPF_JEQ_K, 0, To::Next, here(&prog, 4)));
    prog.push(st(BPF_LD_W_ABS, ARGS_OFFSET + 2 * 8 + 4));
    prog.push(op(BPF_JEQ_K, 0, To::Next, here(&prog, 2)));
    prog.push(st(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    prog.push(st(BPF_RET_K, eperm_k));
    assert!(
        prog.len() <= usize::from(u16::MAX),
        "BPF program longer than the kernel accepts"
    );
    // Jump offsets, as BPF counts them: from the instruction after the jump.
    let resolve = |at: usize, to: To| -> u8 {
        let to = match to {
            To::Next => at + 1,
            To::At(i) => i,
            To::Tail(t) => {
                tails
                    .iter()
                    .find(|(tail, _)| *tail == t)
                    .expect("every tail is placed")
                    .1
            }
        };
        assert!(to > at, "BPF jumps only forward");
        u8::try_from(to - at - 1).expect("the policy is too long for 8-bit BPF jumps")
    };
    Ok(prog
        .iter()
        .enumerate()
        .map(|(at, i)| {
            if u32::from(i.code) & 0x07 == libc::BPF_JMP {
                jump(i.code, i.k, resolve(at, i.jt), resolve(at, i.jf))
            } else {
                stmt(i.code, i.k)
            }
        })
        .collect())
}

/// Appends the lookup of the syscall number (in A) among `entries` (sorted,
/// not empty): runs of at most `leaf` `jeq`s, the last of which ends at
/// EPERM, below `jge` nodes that split the range in halves.
fn lookup(prog: &mut Vec<Insn>, entries: &[&Entry], leaf: usize) {
    if entries.len() <= leaf {
        for (i, e) in entries.iter().enumerate() {
            let target = match e.verdict {
                Verdict::Allow => Tail::Allow,
                Verdict::Enosys => Tail::Enosys,
                Verdict::AllowCloneWithoutNamespaces => Tail::Clone,
                Verdict::AllowPrlimitRead => Tail::Prlimit,
            };
            let miss = if i + 1 == entries.len() {
                To::Tail(Tail::Eperm)
            } else {
                To::Next
            };
            let nr = u32::try_from(e.nr).expect("syscall numbers are small");
            prog.push(Insn {
                code: BPF_JEQ_K,
                k: nr,
                jt: To::Tail(target),
                jf: miss,
            });
        }
        return;
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    let node = prog.len();
    let split = u32::try_from(high[0].nr).expect("syscall numbers are small");
    prog.push(Insn {
        code: BPF_JGE_K,
        k: split,
        jt: To::Next, // patched below, once the low half is placed
        jf: To::Next,
    });
    lookup(prog, low, leaf);
    prog[node].jt = To::At(prog.len());
    lookup(prog, high, leaf);
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
// Offsets in struct seccomp_data: nr, arch, instruction pointer, args[6].
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;
/// Syscall numbers of the x32 ABI carry this bit (with x86_64's AUDIT_ARCH).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// This architecture's AUDIT_ARCH value.
fn audit_arch() -> Result<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(0xC000_003E),
        "aarch64" => Ok(0xC000_00B7),
        "riscv64" => Ok(0xC000_00F3),
        arch => Err(Error::SeccompArch { arch }),
    }
}

/// The same policy compiled by seccompiler (a short ENOSYS prefix, then
/// its allow-list with EPERM for everything else): the reference the
/// compact program is checked against.
pub fn compile_reference() -> Result<BpfProgram> {
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
    let mut program = enosys_prefix(audit_arch()?, &enosys);
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
fn enosys_prefix(audit_arch: u32, nrs: &[i64]) -> BpfProgram {
    // Layout: [ld arch] [jeq arch ? next : end] [ld nr] ([jeq nr ? ret : next])* [ret ENOSYS]
    // with "end" the first instruction after the prefix.
    let n = nrs.len();
    assert!(n < 200, "too many ENOSYS syscalls for 8-bit jumps");
    let mut prog = Vec::with_capacity(n + 4);
    prog.push(stmt(BPF_LD_W_ABS, ARCH_OFFSET));
    // Skip the nr load, the n comparisons and the return.
    prog.push(jump(BPF_JEQ_K, audit_arch, 0, (n + 2) as u8));
    prog.push(stmt(BPF_LD_W_ABS, NR_OFFSET));
    for (i, &nr) in nrs.iter().enumerate() {
        let nr = u32::try_from(nr).expect("syscall numbers are small");
        let to_ret = (n - 1 - i) as u8;
        // Not this one: the next comparison, or past the return after the last.
        let next = if i + 1 == n { 1 } else { 0 };
        prog.push(jump(BPF_JEQ_K, nr, to_ret, next));
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

    /// A classic-BPF interpreter for what seccomp filters use: word loads
    /// from seccomp_data, jumps on a constant, returns.
    fn run(prog: &[seccompiler::sock_filter], data: &[u8; 64]) -> u32 {
        run_counting(prog, data).0
    }

    /// [`run`], also counting the instructions executed.
    fn run_counting(prog: &[seccompiler::sock_filter], data: &[u8; 64]) -> (u32, usize) {
        let mut pc = 0usize;
        let mut a: u32 = 0;
        let mut steps = 0;
        loop {
            steps += 1;
            let i = &prog[pc];
            let class = u32::from(i.code) & 0x07;
            match class {
                x if x == libc::BPF_LD => {
                    assert_eq!(i.code, BPF_LD_W_ABS, "unexpected load at {pc}");
                    let k = i.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                x if x == libc::BPF_JMP => {
                    let op = u32::from(i.code) & 0xf0;
                    if op == libc::BPF_JA {
                        pc += 1 + i.k as usize;
                        continue;
                    }
                    assert_eq!(u32::from(i.code) & 0x08, libc::BPF_K, "register operand at {pc}");
                    let taken = match op {
                        x if x == libc::BPF_JEQ => a == i.k,
                        x if x == libc::BPF_JGE => a >= i.k,
                        x if x == libc::BPF_JGT => a > i.k,
                        x if x == libc::BPF_JSET => a & i.k != 0,
                        _ => panic!("unexpected jump {:#x} at {pc}", i.code),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
                x if x == libc::BPF_RET => return (i.k, steps),
                x if x == libc::BPF_ALU => {
                    let op = u32::from(i.code) & 0xf0;
                    match op {
                        x if x == libc::BPF_AND => a &= i.k,
                        x if x == libc::BPF_OR => a |= i.k,
                        x if x == libc::BPF_RSH => a >>= i.k,
                        x if x == libc::BPF_LSH => a <<= i.k,
                        _ => panic!("unexpected ALU op {:#x} at {pc}", i.code),
                    }
                    pc += 1;
                }
                x if x == libc::BPF_MISC => {
                    // TAX / TXA are not used by either program.
                    panic!("unexpected MISC op {:#x} at {pc}", i.code)
                }
                _ => panic!("unexpected instruction {:#x} at {pc}", i.code),
            }
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, v) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        d
    }

    /// The longest and the total walk of a program over the syscall numbers
    /// 0..600 with arguments zero, in instructions run: what the kernel's
    /// action cache walks at each install.
    fn walks(prog: &[seccompiler::sock_filter]) -> (usize, usize) {
        let arch = audit_arch().unwrap();
        let steps: Vec<usize> = (0..600u32)
            .map(|nr| run_counting(prog, &data(arch, nr, [0; 6])).1)
            .collect();
        (*steps.iter().max().unwrap(), steps.iter().sum())
    }

    #[test]
    fn the_search_walks_a_short_path_for_every_syscall_number() {
        let search = compile().unwrap();
        let chain = compile_linear().unwrap();
        let reference = compile_reference().unwrap();
        let ((s, s_all), (c, c_all), (r, r_all)) = (walks(&search), walks(&chain), walks(&reference));
        // The prefix, log2 of the entries, a leaf run and an argument check.
        let bound = 4 + PROC_POLICY.len().ilog2() as usize + SEARCH_LEAF + 6;
        assert!(s <= bound, "the search walks {s} instructions, more than {bound}");
        assert!(
            s_all * 3 < c_all,
            "the search ({s_all} in all) walks about as far as the chain ({c_all})"
        );
        assert!(
            c < r && c_all < r_all,
            "the chain ({c}, {c_all} in all) walks as far as seccompiler's program ({r}, {r_all})"
        );
        assert!(
            chain.len() * 3 < reference.len() && search.len() * 2 < reference.len(),
            "the programs ({} and {} instructions) are not much shorter than seccompiler's ({})",
            search.len(),
            chain.len(),
            reference.len()
        );
    }

    #[test]
    fn the_compact_programs_decide_as_seccompilers_on_every_case() {
        for compact in [compile().unwrap(), compile_linear().unwrap()] {
            decides_as_seccompiler(&compact);
        }
    }

    fn decides_as_seccompiler(compact: &[seccompiler::sock_filter]) {
        let reference = compile_reference().unwrap();
        let arch = audit_arch().unwrap();
        let args_cases: Vec<[u64; 6]> = vec![
            [0; 6],
            [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0],
            [libc::CLONE_NEWUSER as u64 | libc::CLONE_VM as u64, 0, 0, 0, 0, 0],
            [
                libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64 | libc::CLONE_SIGHAND as u64,
                0,
                0,
                0,
                0,
                0,
            ],
            [1 << 40, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1 << 33, 0, 0, 0],
            [u64::MAX; 6],
        ];
        let mut cases = 0;
        for nr in 0..600u32 {
            for args in &args_cases {
                let d = data(arch, nr, *args);
                assert_eq!(
                    run(compact, &d),
                    run(&reference, &d),
                    "syscall {nr} with arguments {args:x?}"
                );
                cases += 1;
            }
        }
        // The x32 ABI's numbers, and another architecture.
        for nr in [0u32, 1, 56, 0x4000_0000, 0x4000_0001, 0x4000_0200, u32::MAX] {
            let d = data(arch, nr, [0; 6]);
            let compact_says = run(compact, &d);
            if nr >= X32_SYSCALL_BIT {
                assert_eq!(
                    compact_says,
                    libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                    "x32 syscall {nr:#x}"
                );
            }
            let foreign = data(0x4000_0003, nr, [0; 6]);
            assert_eq!(
                run(compact, &foreign),
                libc::SECCOMP_RET_KILL_PROCESS,
                "i386 syscall {nr}"
            );
        }
        assert!(cases > 4000);
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
