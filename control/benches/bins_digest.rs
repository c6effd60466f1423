//! BLAKE3 against SHA-256 on a 10 MiB buffer, one thread: the digest of
//! the binary cache is computed as a fetched binary streams through, on a
//! cold start's critical path, so its throughput matters.
//!
//! The two run in the same process, interleaved round by round on the same
//! buffer (fed in 1 MiB chunks, as a fetch feeds them); the median of each
//! and their ratio are printed. `cargo bench -p sigma-control --bench bins_digest`.
//!
//! Then the whole cold fetch it is part of: a 10 MiB static executable from
//! a local store into an empty cache (record read, object read, BLAKE3,
//! cache writes, rename), with the cache IO on a data-plane core and on
//! tokio's blocking pool; and as sigmad fetches from a local store by
//! default: hard-linked into the cache and checked where it lies, its
//! BLAKE3 in pieces on two data-plane cores (`BinCache::link_local_files`);
//! all interleaved. Then a warm get (a hit).

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
    digests();
    fetches();
}

fn digests() {
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

/// A synthetic static executable of `bytes` bytes: an ELF64 x86_64
/// `ET_EXEC` header with one `PT_LOAD`, then pseudo-random bytes.
fn synthetic_static_elf(bytes: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..bytes as u64)
        .map(|i| (i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8)
        .collect();
    b[..64].fill(0);
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    b[64..120].fill(0);
    b[64..68].copy_from_slice(&1u32.to_le_bytes());
    b
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn fetches() {
    use sigma_control::bins::{BinCache, BinName, BinRegistry, BlockingIo, CacheIo, DataPlaneIo, StoreConfig};
    use std::sync::Arc;
    const FETCH_ROUNDS: usize = 20;
    const HITS: usize = 2000;

    let (dp, server) = DataPlaneIo::new();
    let (dp2, servers2) = DataPlaneIo::with_cores(2);
    let mut core_threads = Vec::new();
    for (i, server) in std::iter::once(server).chain(servers2).enumerate() {
        core_threads.push(std::thread::spawn(move || {
            let core = sigma_dataplane::Core::builder().build().expect("data-plane core");
            if i == 0 {
                eprintln!("data-plane core: {:?} ({})", core.backend(), core.backend_reason());
            }
            core.block_on(server.run());
        }));
    }
    let dp2: Arc<dyn CacheIo> = Arc::new(dp2);
    // (name, cache IO, hard-link a local store's file instead of copying it)
    let ios: Vec<(&str, Arc<dyn CacheIo>, bool)> = vec![
        ("data-plane", Arc::new(dp), false),
        ("blocking", Arc::new(BlockingIo), false),
        ("linked, 2 cores", dp2, true),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sigma-bins-bench-{}", std::process::id()));
    let elf = synthetic_static_elf(BUFFER_BYTES);
    rt.block_on(async {
        let registry = BinRegistry::open(&StoreConfig::local(dir.join("store"))).unwrap();
        let name = BinName::parse("bench@v1").unwrap();
        registry.put(&name, bytes::Bytes::from(elf)).await.unwrap();
        let mut cold: Vec<Vec<Duration>> = vec![Vec::new(); ios.len()];
        let mut warm: Vec<Vec<Duration>> = vec![Vec::new(); ios.len()];
        for round in 0..FETCH_ROUNDS {
            for (i, (_, io, link)) in ios.iter().enumerate() {
                let cache_dir = dir.join(format!("cache-{round}-{i}"));
                let cache = BinCache::open(&cache_dir, registry.clone(), io.clone(), Duration::from_secs(60)).unwrap();
                cache.link_local_files(*link);
                let t = Instant::now();
                cache.get(&name).await.unwrap();
                cold[i].push(t.elapsed());
                if round == 0 {
                    for _ in 0..HITS {
                        let t = Instant::now();
                        cache.get(&name).await.unwrap();
                        warm[i].push(t.elapsed());
                    }
                }
                std::fs::remove_dir_all(&cache_dir).unwrap();
            }
        }
        println!("cold fetch of a 10 MiB binary, local store → empty cache, {FETCH_ROUNDS} interleaved rounds:");
        for (i, (kind, _, _)) in ios.iter().enumerate() {
            let (p50, p99) = (percentile(&mut cold[i], 0.5), percentile(&mut cold[i], 0.99));
            let best = cold[i][0];
            println!(
                "  {kind:<15} p50 {p50:>9.3?} ({:>5.0} MB/s)  best {best:>9.3?}  max {p99:>9.3?}",
                mb_per_s(p50)
            );
        }
        println!("warm get (a hit: record memo, verified digest, one stat of the file), {HITS} gets:");
        for (i, (kind, _, _)) in ios.iter().enumerate() {
            let (p50, p99) = (percentile(&mut warm[i], 0.5), percentile(&mut warm[i], 0.99));
            println!("  {kind:<15} p50 {p50:>8.2?}  p99 {p99:>8.2?}");
        }
    });
    drop(ios);
    let _ = std::fs::remove_dir_all(&dir);
    for t in core_threads {
        let _ = t.join();
    }
}
