//! Binaries: the store procs' executables live in, and sigmad's
//! content-addressed cache of them.
//!
//! **Names.** A binary is `NAME[@VERSION]` ([`BinName`]): NAME 1–64 bytes
//! of `a-z 0-9 . _ -`, VERSION 1–64 bytes of `A-Z a-z 0-9 . _ -`, each
//! starting with a letter or digit (so neither is ever `.`, `..` or holds
//! a `/`), VERSION `latest` when left out.
//!
//! **The store** ([`BinRegistry`]) goes through `object_store`: a local
//! directory by default ([`StoreConfig::local_default`]: `DATA/bins/store`
//! under sigmad's data directory), or `s3://BUCKET[/PREFIX]` with endpoint,
//! credentials (or the `AWS_*` environment), region and `allow_http`
//! options, path-style. Per binary it holds the bytes (`NAME/VERSION/elf`)
//! and a record (`NAME/VERSION/record.json`: size and BLAKE3 digest). A put
//! refuses a file over [`limits::BIN_BYTES_MAX`] (before reading it) and
//! anything but a static executable ([`elf`]: the ELF and program headers,
//! parsed here; `PT_INTERP` or `DT_NEEDED` means dynamic), then writes the
//! bytes and then the record: the record is what makes a binary exist.
//! Every store call has a reply deadline ([`StoreConfig::reply_deadline`],
//! 5 s by default; a put's grows by its size at 10 MB/s,
//! [`limits::STORE_UPLOAD_BYTES_PER_S_MIN`]; a fetch's applies to the
//! response and to each chunk of the body): no answer, or no connection
//! after the client's retries
//! (which the same deadline bounds), is [`BinError::StoreUnreachable`]
//! within it, never a hang. The S3 client is reqwest with rustls on ring
//! (not object_store's `aws` feature, whose aws-lc-sys is a large C build).
//!
//! **The cache** ([`BinCache`]) is a directory of files named by their
//! digest, mode 0555. [`BinCache::get`] resolves a name to a record (the
//! store is asked at most once per [`limits::RECORD_TTL_DEFAULT`], 1 s, per
//! name: spawns close together skip the store entirely), and returns the
//! cached file if it is there. Otherwise it fetches, **once per machine
//! however many spawns ask at once**: the first ask starts the fetch as a
//! task of its own and registers it by name; later asks wait on it and all
//! get its outcome, the same binary or the same error (a spawn that stops
//! waiting does not cancel it for the others). A failed fetch is not
//! remembered: the next ask tries again.
//!
//! **The digest is checked as the bytes stream through**, not in a second
//! pass: each chunk is counted (more than the record's size fails at once),
//! hashed, and its first 64 KiB are ELF-checked, then handed to the cache
//! IO; the file is written under a temporary name (`.fill.*`), and only if
//! the size and digest match the record is it made 0555 and renamed to its
//! digest (no fsync: the cache needs integrity, not durability — a file
//! this process did not write is re-hashed on first use — and an fsync of
//! 10 MiB cost tens of ms on a cold start). Any failure — digest or size
//! mismatch, not a static executable, a store error, a deadline — removes
//! the temporary file, so nothing but verified binaries is ever under a
//! digest's name (leftovers of a crash are removed when the cache opens).
//! "Checked before exec": a file this process wrote was checked as it was
//! written; a file found from an earlier run is re-hashed once on its first
//! use by this process, and removed and fetched again if it does not match.
//! A hit costs a lock, a map look-up and one `stat` (2 µs).
//!
//! **The cache is bounded in bytes** ([`BinCache::open_bounded`];
//! [`limits::BIN_CACHE_BYTES_DEFAULT`], 4 GiB, by default; sigmad's
//! `--bin-cache-mib`). Every cache file counts by its size, a hard link
//! into a local store too. A fill first reserves its bytes, evicting the
//! least recently used files (a use: a get that returned the file, its
//! fill, or its place in the order found at open) until they fit; an
//! evicted file leaves the cache's index and memos, so a later get fetches
//! it again. Never evicted: a file **pinned** by a [`CachePin`] — every
//! [`CachedBin`] a get returns holds one, and a spawn keeps it until the
//! sandbox has taken the binary as a detached bind mount (`open_tree`,
//! before the clone), after which the proc holds the inode and the file may
//! go — and a file a fill is writing. A binary larger than the whole bound
//! is refused ([`BinError::CacheTooSmall`], naming both sizes); so is one
//! for which no unpinned file is left to evict ([`BinError::CacheFull`]:
//! no unbounded growth, the spawn is `busy`). The files an earlier run left
//! count at open, the oldest (by the later of atime and mtime) removed
//! until they fit. [`CacheStats`] counts `evicted` and the current `bytes`.
//!
//! **Why BLAKE3.** The digest is on the cold-start path of every new
//! binary. On one of these machines (2 vCPUs, SHA-NI), one thread,
//! 10 MiB in 1 MiB updates, interleaved (`benches/bins_digest.rs`):
//! BLAKE3 4,157–4,362 MB/s (2.4–2.5 ms), SHA-256 (sha2 0.10, using SHA-NI)
//! 1,088–1,618 MB/s (6.5–9.6 ms): BLAKE3 2.7–3.8× faster, a few ms saved
//! per 10 MiB against a 5 ms cold-start budget. Both are cryptographic;
//! SHA-256 would matter only to match digests published elsewhere (OCI),
//! which σ does not need. BLAKE3 is also a tree: a file's pieces hash
//! apart, on several cores, and merge (below). A whole cold fetch of
//! 11 MiB from a local store (record, hard link, BLAKE3 in pieces on two
//! cores, rename) took 4.3–4.5 ms on a 2-vCPU VM with AVX2 whose one-thread
//! BLAKE3 ran at 2.0–2.8 GB/s (`sigmactl times`, quick cold starts of
//! `sigmabench run spawn`).
//!
//! **Cache IO through the data plane.** The cache's reads and writes go
//! through [`CacheIo`] (the issue's `CacheWriter`, with reads): with
//! [`DataPlaneIo`] each is a job for a data-plane core, run there as
//! `sigma_dataplane::read_at`/`write_at` (io_uring READ/WRITE) in a BE
//! task, while the control thread (tokio, current-thread, where
//! object_store and its S3 client run) hashes and hands the bytes over;
//! [`BlockingIo`] does the same on tokio's blocking pool, for tools and
//! tests without a core. Both are tested. [`DataPlaneIo::with_cores`]
//! spreads the jobs over several cores in turn (sigmad: one per CPU up to
//! 4). A file already on the machine (a local store's file hard-linked
//! into the cache, or a cache file to re-check) is hashed where it lies
//! with [`CacheIo::hash_piece`]: 1 MiB pieces, each a BLAKE3 subtree
//! ([`digest::PieceHasher`]), go to the cores, each read in 64 KiB reads
//! into one reused buffer and hashed on its core right after each read
//! (cache-hot: 64 KiB reads of 11 MiB took 3.0 ms here, 1 MiB ones
//! 9.2–9.6 ms), and their chaining values merge in file order
//! ([`digest::merge_pieces`]). A local store's object that must be copied
//! (another filesystem, `--bin-cache-copy`) is read through the same
//! [`CacheIo`] in 1 MiB reads (object_store would read it in 8 KiB steps
//! on its blocking pool) and hashed in order on the control thread. An
//! S3 object past 4 MiB arrives as ranged parts, all asked for at once,
//! cut into 1 MiB pieces as they come; each piece is written and hashed
//! (a BLAKE3 subtree) on a cache-IO core with [`CacheIo::write_hash_piece`]
//! while the rest comes; a smaller one as the response body's
//! chunks, gathered into 1 MiB writes and hashed on the control thread. At most
//! [`limits::CACHE_WRITES_IN_FLIGHT_MAX`] writes of a fetch are in flight,
//! so the next chunk is received and hashed while earlier ones are written.
//! chmod and rename run on tokio's blocking pool.
//!
//! **Limits** are in [`limits`]; errors are [`BinError`], each variant
//! naming the operation, the binary and the store or cache path.
//!
//! Not done yet: fetching from a peer machine before the store is not built;
//! two puts of one name racing each other can leave one's record beside
//! the other's bytes, which fetches then refuse as a digest mismatch until
//! the next put (see [`registry`]).

pub mod cache;
pub mod digest;
pub mod elf;
pub mod error;
pub mod io;
pub mod limits;
pub mod name;
pub mod registry;

pub use cache::{BinCache, CachePin, CacheStats, CachedBin, EarlyFile, EarlyNotice};
pub use digest::Digest;
pub use error::BinError;
pub use io::{BlockingIo, CacheIo, DataPlaneIo, DataPlaneIoServer};
pub use name::BinName;
pub use registry::{BinRegistry, Record, RegistryStats, StoreConfig};
