//! The trivial proc: starts and exits 0, or with the code given as its
//! first argument. What `spawn` (warm start) and `spawn-rate` start.
//!
//! Static (`rustc -O -C target-feature=+crt-static`), and within the
//! sandbox's seccomp allow-list (sandbox/src/policy.rs `PROC_POLICY`):
//! std start-up and `exit_group` only.

fn main() {
    let code = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<i32>().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
