//! BLAKE3 against SHA-256 on a 10 MiB buffer, one thread: the digest of
//! the binary cache is computed as a fetched binary streams through, on a
//! cold start's critical path, so its throughput matters.
//!
//! The two run in the same process, interleaved round by round on the same
//! buffer (fed in 1 MiB chunks, as a fetch feeds them); the median of each
//! and their ratio are printed. `cargo bench -p sigma-control --bench bins_digest`.

use sha2::Digest as _;
use std::time::{Duration, Instant};

const BUFFER_BYTES: usize = 10 * 1024 * 1024;
const CHUNK_BYTES: usize = 1024 * 1024;
const ROUNDS: usize = 30;

fn blake3_once(data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for chunk in data.chunks(CHUNK_BYTES) {
        h.update(chunk);
    }
    *h.finalize().as_bytes()
}

fn sha256_once(data: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for chunk in data.chunks(CHUNK_BYTES) {
        h.update(chunk);
    }
    h.finalize().into()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mb_per_s(d: Duration) -> f64 {
    BUFFER_BYTES as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    // Not all zeroes, so that nothing can take a short cut.
    let data: Vec<u8> = (0..BUFFER_BYTES as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = ["sha_ni", "avx2", "avx512f"]
        .into_iter()
        .filter(|f| cpu.contains(f))
        .collect();
    // Warm-up: page in the buffer and the code.
    let (mut sink_b, mut sink_s) = (blake3_once(&data), sha256_once(&data));
    let (mut b, mut s) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let t = Instant::now();
        sink_b[0] ^= blake3_once(&data)[0];
        b.push(t.elapsed());
        let t = Instant::now();
        sink_s[0] ^= sha256_once(&data)[0];
        s.push(t.elapsed());
    }
    let (b_min, s_min) = (*b.iter().min().unwrap(), *s.iter().min().unwrap());
    let (b, s) = (median(b), median(s));
    println!("digest of a 10 MiB buffer, 1 MiB updates, one thread, {ROUNDS} interleaved rounds; cpu flags {flags:?}");
    println!(
        "  BLAKE3 1.8:  median {b:>10.3?}  {:>8.0} MB/s  (best {:.0} MB/s)",
        mb_per_s(b),
        mb_per_s(b_min)
    );
    println!(
        "  SHA-256 0.10: median {s:>10.3?}  {:>8.0} MB/s  (best {:.0} MB/s)",
        mb_per_s(s),
        mb_per_s(s_min)
    );
    println!(
        "  BLAKE3 / SHA-256 throughput: {:.2}x",
        s.as_secs_f64() / b.as_secs_f64()
    );
    std::hint::black_box((sink_b, sink_s));
}
