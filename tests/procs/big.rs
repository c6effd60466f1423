//! The big proc: a static binary of a little over 10 MiB, for cold starts
//! (what fetching and verifying a binary costs). The bulk is a 10 MiB
//! table in the binary's read-only data, filled at compile time with a
//! pattern (not zeros, which would go to .bss and take no file space). At
//! run time it reads one byte of the table at an offset the compiler cannot
//! know, so the table is kept; the first argument is the exit code (default
//! 0), as for `trivial`. With `touch` as the second argument it reads one
//! byte of every page and exits with a code derived from their sum (only
//! for checking that the table is really there). `SIGMA_BENCH_STAMP` as for `trivial`.

#![allow(long_running_const_eval)]

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

const TABLE_BYTES: usize = 10 << 20;
const WORDS: usize = TABLE_BYTES / 8;

/// A xorshift sequence: cheap to evaluate at compile time, incompressible
/// enough that no linker or filesystem trick makes it small.
const fn fill() -> [u64; WORDS] {
    let mut t = [0u64; WORDS];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0;
    while i < WORDS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t[i] = x;
        i += 1;
    }
    t
}

static TABLE: [u64; WORDS] = fill();

fn main() {
    stamp(monotonic_ns());
    let mut args = std::env::args().skip(1);
    let code = args.next().and_then(|a| a.parse::<i32>().ok()).unwrap_or(0);
    let table = std::hint::black_box(&TABLE);
    if args.next().as_deref() == Some("touch") {
        let mut sum: u64 = 0;
        let mut i = 0;
        while i < WORDS {
            sum = sum.wrapping_add(table[i]);
            i += 4096 / 8;
        }
        std::process::exit((sum % 100) as i32 + 1);
    }
    let i = std::hint::black_box(code as usize) % WORDS;
    std::hint::black_box(table[i]);
    std::process::exit(code);
}
