//! The trivial proc: starts and exits 0, or with the code given as its
//! first argument. What `spawn` (warm start) and `spawn-rate` start.
//!
//! Static (`rustc -O -C target-feature=+crt-static`), and within the
//! sandbox's seccomp allow-list (sandbox/src/policy.rs `PROC_POLICY`):
//! std start-up and `exit_group` only (and `write` with `SIGMA_BENCH_STAMP` set).

/// Set in the environment (to anything), the proc writes `started <ns>` to stdout as the first
/// thing `main` does: CLOCK_MONOTONIC in nanoseconds, read through the vDSO (no system call), so
/// that sigmabench can tell exec-to-main from the exit's teardown.
const STAMP_ENV: &str = "SIGMA_BENCH_STAMP";

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CLOCK_MONOTONIC now, ns.
fn monotonic_ns() -> u64 {
    const CLOCK_MONOTONIC: i32 = 1;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: glibc's clock_gettime writes one timespec (two 64-bit fields on x86_64) into `ts`.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes the start stamp if asked to.
fn stamp(started_ns: u64) {
    if std::env::var_os(STAMP_ENV).is_some() {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "started {started_ns}");
    }
}

fn main() {
    stamp(monotonic_ns());
    let code = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<i32>().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
