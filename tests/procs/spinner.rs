//! The spinner proc: keeps one CPU busy for the milliseconds given as its
//! first argument (default 1000), then exits 0. The clock is read through
//! the vDSO (no system call), so the loop makes none.

use std::time::{Duration, Instant};

fn main() {
    let ms = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(1000);
    let until = Instant::now() + Duration::from_millis(ms);
    let mut x: u64 = 0;
    while Instant::now() < until {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}
