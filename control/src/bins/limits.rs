//! Limits of the binary store and cache: every size, count and wait is
//! bounded here, units last in each name.

use std::time::Duration;

/// Bytes of one binary, at most: a put or a fetch of more is refused.
pub const BIN_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Bytes of a binary's name (the part before `@`), at most.
pub const NAME_BYTES_MAX: usize = 64;

/// Bytes of a binary's version (the part after `@`), at most.
pub const VERSION_BYTES_MAX: usize = 64;

/// The version a name without `@VERSION` means.
pub const VERSION_DEFAULT: &str = "latest";

/// Bytes of a binary's record (its JSON: name, version, size, digest) in
/// the store, at most. A record is tens of bytes; more is not one of ours.
pub const RECORD_BYTES_MAX: usize = 4096;

/// Bytes at the start of a file within which the ELF header and all
/// program headers must lie (they are at byte 64 in any linker's output).
/// A fetch checks the file as it streams, from this prefix.
pub const ELF_HEADERS_BYTES_MAX: usize = 64 * 1024;

/// Program headers of an ELF file, at most (a static executable has about
/// ten).
pub const ELF_PROGRAM_HEADERS_MAX: usize = 256;

/// Entries of the dynamic section the put-time check reads, at most.
pub const ELF_DYNAMIC_ENTRIES_MAX: usize = 4096;

/// Bytes the cache hands to one write, at most: the store's chunks (8 KiB
/// from a local store, socket reads from S3) are coalesced up to this.
pub const CACHE_WRITE_BYTES: usize = 1024 * 1024;

/// Cache writes of one fetch in flight at once, at most: the next chunk is
/// received and hashed while earlier ones are being written.
pub const CACHE_WRITES_IN_FLIGHT_MAX: usize = 4;

/// Bytes of a file one checking read takes: a file already on this
/// machine (a local store's file hard-linked into the cache, a cache file
/// left by an earlier run) is read in chunks of this size into one buffer
/// per piece that is reused, and each chunk hashed right after its read,
/// while it is still in the core's cache. On this VM reading 11 MiB from
/// the page cache took 3.0 ms in 64 KiB reads and 9.2-9.6 ms in reads of
/// 256 KiB to 16 MiB (each a fresh cache-missing buffer), and read+hash
/// 7.0 ms against 13.4 ms.
pub const HASH_READ_BYTES: usize = 64 * 1024;

/// Bytes of one piece of a checking read: a file is hashed as BLAKE3
/// subtrees of this size (a power of two, so each piece is a whole subtree
/// of the file's tree), spread over the data-plane cores, and their
/// chaining values merged into the file's digest. A file of one piece or
/// less is hashed whole.
pub const HASH_PIECE_BYTES: u64 = 1024 * 1024;

/// Pieces of one checking read in flight at once per data-plane core
/// serving cache IO.
pub const HASH_PIECES_IN_FLIGHT_PER_CORE: usize = 2;

/// Write jobs queued towards the data-plane cache writer, at most.
pub const CACHE_WRITE_QUEUE_MAX: usize = 64;

/// An evicted cache file is unlinked this long after its eviction, not at
/// once: the unlink of a last link frees the file's pages and blocks and
/// waits for their writeback, work that would otherwise compete on the
/// CPUs with the start whose fetch evicted it.
pub const EVICTED_UNLINK_DELAY: Duration = Duration::from_millis(20);

/// How long one store call may wait for an answer (or one more chunk of a
/// fetch) before the store counts as unreachable, by default.
pub const STORE_REPLY_DEFAULT: Duration = Duration::from_secs(5);

/// The slowest rate at which a store is expected to take an upload: a
/// put's deadline is the reply deadline plus its size at this rate (a
/// 256 MiB binary: 27 s more).
pub const STORE_UPLOAD_BYTES_PER_S_MIN: u64 = 10_000_000;

/// The longest reply deadline a configuration may ask for.
pub const STORE_REPLY_MAX: Duration = Duration::from_secs(120);

/// How long a fetched record (name → digest) is reused before the store is
/// asked again, by default: spawns within this of each other skip the store.
pub const RECORD_TTL_DEFAULT: Duration = Duration::from_secs(1);

/// Records one list returns, at most.
pub const LIST_ENTRIES_MAX: usize = 10_000;

/// Records a list reads from the store at once, at most.
pub const LIST_READS_IN_FLIGHT_MAX: usize = 8;

/// Names the cache remembers a record for, at most (beyond it the oldest
/// memo is dropped; the cached files themselves stay).
pub const RECORD_MEMOS_MAX: usize = 4096;

/// A remote store's object larger than this is read as ranged GETs of
/// this size, [`OBJECT_PARTS_IN_FLIGHT`] at once from the start, handed to
/// the hashing in pieces as they come: one GET streams at one connection's pace, while a
/// server answers ranges in parallel. The parts in flight bound the memory
/// a fetch holds. A multiple of [`HASH_PIECE_BYTES`]: each part is cut
/// into pieces, each a BLAKE3 subtree. 4 MiB
/// over 2 MiB: fewer requests, each with the server's fixed cost (the
/// 11.2 MiB example proc from the suite's S3 server, quick cold-start-s3
/// runs alternated: fetch 10.9–12.1 ms in three parts against 11.4–12.4
/// ms in six; ARCHITECTURE.md has the sweep).
pub const OBJECT_PART_BYTES: u64 = 4 * 1024 * 1024;

/// Ranged GETs of one fetch in flight at once (see [`OBJECT_PART_BYTES`]).
pub const OBJECT_PARTS_IN_FLIGHT: usize = 4;

/// Bytes of cache files the binary cache keeps, by default (sigmad's
/// `--bin-cache-mib`): past it, the least recently used files no spawn is
/// starting from are removed, and fetched again when next asked for. A
/// file hard-linked from a local store counts by its size like a copy (the
/// cache cannot tell what else holds the inode). 4 GiB: sixteen binaries
/// of the largest size ([`BIN_BYTES_MAX`]), or hundreds of typical ones (a
/// static Rust server is 5-20 MB), so a machine's working set of binaries
/// stays cached, while a long-lived sigmad that has seen many versions
/// cannot fill its disk with them.
pub const BIN_CACHE_BYTES_DEFAULT: u64 = 4 << 30;

const _: () = assert!(CACHE_WRITE_BYTES as u64 <= BIN_BYTES_MAX);
const _: () = assert!(BIN_CACHE_BYTES_DEFAULT >= BIN_BYTES_MAX);
const _: () = assert!(CACHE_WRITES_IN_FLIGHT_MAX >= 1);
const _: () = assert!(HASH_PIECE_BYTES.is_power_of_two() && HASH_PIECE_BYTES >= 1024);
const _: () = assert!(HASH_READ_BYTES as u64 <= HASH_PIECE_BYTES && HASH_PIECES_IN_FLIGHT_PER_CORE >= 1);
// A ranged fetch cuts each part into pieces that start at multiples of
// HASH_PIECE_BYTES (registry::cut_pieces).
const _: () = assert!(OBJECT_PART_BYTES % HASH_PIECE_BYTES == 0 && OBJECT_PARTS_IN_FLIGHT >= 1);
const _: () = assert!(STORE_UPLOAD_BYTES_PER_S_MIN > 0);
const _: () = assert!(ELF_HEADERS_BYTES_MAX >= 64 + ELF_PROGRAM_HEADERS_MAX * 56);
const _: () = assert!(STORE_REPLY_DEFAULT.as_millis() <= STORE_REPLY_MAX.as_millis());
const _: () = assert!(VERSION_DEFAULT.len() <= VERSION_BYTES_MAX);
