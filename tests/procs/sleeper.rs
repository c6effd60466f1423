//! The sleeper proc: sleeps the milliseconds given as its first argument
//! (default 1000), then exits 0. Uses `clock_nanosleep` only, which the
//! sandbox's seccomp allow-list permits.

use std::time::Duration;

fn main() {
    let ms = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(1000);
    std::thread::sleep(Duration::from_millis(ms));
}
