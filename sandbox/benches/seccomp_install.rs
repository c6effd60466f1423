//! What installing the procs' seccomp filter costs, per program layout
//! (`cargo bench -p sigma-sandbox --bench seccomp_install`).
//!
//! Every proc start installs the filter in its child (`Step::Seccomp`), and
//! the kernel's cost grows with the program: it JIT-compiles it, then runs
//! it once per syscall number to fill its action cache. Each sample is one
//! seccomp(2) call in a freshly forked child, timed by the child; the
//! programs take turns, so that a slow spell of the machine hits them all.
//! Prints p50 and p90 per program; a guard against a layout that makes
//! the install slower, not a comparison with other systems.

use std::time::Duration;

use sigma_sandbox::policy;

const SAMPLES: usize = 300;

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Forks a child that installs `prog` and reports how long seccomp(2)
/// took, in ns; None if the install failed.
fn install_once(prog: &[seccompiler::sock_filter]) -> Option<u64> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).expect("program fits a sock_fprog"),
        // seccompiler's sock_filter is the kernel's layout (repr(C)).
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    // SAFETY: the benchmark's process has one thread; the child makes raw
    // system calls only and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: raw system calls on values the child owns; _exit never returns.
        unsafe {
            let mut took: u64 = u64::MAX;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 {
                let t0 = now_ns();
                let r = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog);
                let t1 = now_ns();
                if r == 0 {
                    took = t1 - t0;
                }
            }
            libc::write(fds[1], (&took as *const u64).cast(), 8);
            libc::_exit(0);
        }
    }
    let mut took: u64 = u64::MAX;
    // SAFETY: closing our copy of the write end; reading 8 bytes into a u64.
    let n = unsafe {
        libc::close(fds[1]);
        let n = libc::read(fds[0], (&mut took as *mut u64).cast(), 8);
        libc::close(fds[0]);
        n
    };
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (n == 8 && took != u64::MAX).then_some(took)
}

fn main() {
    // `cargo bench` passes `--bench`; with `-- --test` (the test command) or
    // under `cargo test --benches` it runs a few installs only.
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let samples = if full { SAMPLES } else { 5 };
    let search = policy::compile().expect("policy compiles");
    let chain = policy::compile_linear().expect("policy compiles");
    let reference = policy::compile_reference().expect("policy compiles");
    let allow_all = vec![seccompiler::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let programs: [(&str, &[seccompiler::sock_filter]); 4] = [
        ("search (policy::compile)", &search),
        ("chain (policy::compile_linear)", &chain),
        ("seccompiler (compile_reference)", &reference),
        ("one instruction: ret ALLOW", &allow_all),
    ];
    let mut took: Vec<Vec<u64>> = programs.iter().map(|_| Vec::with_capacity(samples)).collect();
    for _ in 0..samples {
        for (i, (name, prog)) in programs.iter().enumerate() {
            match install_once(prog) {
                Some(ns) => took[i].push(ns),
                None => {
                    eprintln!("seccomp_install: installing {name} failed in the child; skipping the benchmark");
                    return;
                }
            }
        }
    }
    println!("seccomp(2) SET_MODE_FILTER in a forked child, {samples} installs each, taken in turns:");
    for ((name, prog), mut ns) in programs.iter().zip(took) {
        ns.sort_unstable();
        let p = |q: f64| Duration::from_nanos(ns[((ns.len() - 1) as f64 * q) as usize]);
        println!(
            "  {name:<34} {:>4} instructions  p50 {:>9.1?}  p90 {:>9.1?}",
            prog.len(),
            p(0.5),
            p(0.9)
        );
    }
}
