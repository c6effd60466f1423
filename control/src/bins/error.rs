//! Why a binary-store or cache operation failed.

use std::sync::Arc;
use std::time::Duration;

/// The underlying cause of a failure, shared: one fetch's error goes to
/// every spawn that waited on it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a binary operation failed. Each variant names the operation, the
/// binary and the place (store or cache path).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BinError {
    /// The binary name does not parse.
    #[error("invalid binary name {name:?}: {why}")]
    InvalidName {
        /// The name given (cut to a bounded length).
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The store's configuration is unusable (a bad URL or option).
    #[error("binary store {store:?}: {why}")]
    Config {
        /// The store as configured.
        store: String,
        /// What is wrong.
        why: String,
    },
    /// No record of this binary in the store.
    #[error("binary {name} not found in {store}")]
    NotFound {
        /// The binary.
        name: String,
        /// The store.
        store: String,
    },
    /// The binary is larger than the limit (or than its record says).
    #[error("binary {name}: {bytes} bytes exceeds the limit of {limit} bytes (BIN_BYTES_MAX)")]
    TooLarge {
        /// The binary.
        name: String,
        /// Its size, or the bytes seen when the stream passed the limit.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The binary is larger than the cache's whole bound: it can never be
    /// cached on this machine. Nothing was fetched.
    #[error("binary {name}: {bytes} bytes exceeds the bound of the binary cache {dir}, {max} bytes (sigmad --bin-cache-mib); nothing was fetched")]
    CacheTooSmall {
        /// The binary.
        name: String,
        /// Its size.
        bytes: u64,
        /// The cache's bound.
        max: u64,
        /// The cache directory.
        dir: String,
    },
    /// The cache has no room for the binary: every file that would have to
    /// be evicted is pinned (a spawn is starting from it) or being filled.
    /// Nothing was fetched; a later try may find room.
    #[error("binary {name}: {bytes} bytes do not fit in the binary cache {dir}: {held} of its {max} bytes are held by binaries being started or fetched, which are never evicted; nothing was fetched, try again")]
    CacheFull {
        /// The binary.
        name: String,
        /// Its size.
        bytes: u64,
        /// The cache's bound.
        max: u64,
        /// Bytes of pinned files and fills in flight.
        held: u64,
        /// The cache directory.
        dir: String,
    },
    /// The file is not a static ELF executable.
    #[error("binary {name}: it must be a static executable: {why}")]
    NotStaticElf {
        /// The binary (or the file put).
        name: String,
        /// What the ELF check found.
        why: String,
    },
    /// The fetched bytes do not have the digest the record holds: the
    /// object was changed or corrupted. Nothing was cached.
    #[error("binary {name} from {store}: digest mismatch: the record says blake3 {expected}, the object has {got}; nothing was cached")]
    DigestMismatch {
        /// The binary.
        name: String,
        /// The store.
        store: String,
        /// The digest in the record.
        expected: String,
        /// The digest of the bytes fetched.
        got: String,
    },
    /// The object's size is not the one the record holds. Nothing was
    /// cached.
    #[error("binary {name} from {store}: size mismatch: the record says {expected} bytes, the object has {got}; nothing was cached")]
    SizeMismatch {
        /// The binary.
        name: String,
        /// The store.
        store: String,
        /// The size in the record.
        expected: u64,
        /// The size of the object (or the bytes received).
        got: u64,
    },
    /// The store could not be reached, or did not answer, within the
    /// deadline.
    #[error("{op} {name}: binary store {store} unreachable within {deadline:?}: {why}")]
    StoreUnreachable {
        /// The operation (`put`, `fetch`, `list`, `remove`, `stat`).
        op: &'static str,
        /// The binary, or `*` for a list.
        name: String,
        /// The store.
        store: String,
        /// The deadline.
        deadline: Duration,
        /// `no answer`, or the connection error of the last attempt.
        why: String,
    },
    /// A put failed in the store.
    #[error("put {name} into {store}: {source}")]
    Put {
        /// The binary.
        name: String,
        /// The store.
        store: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A fetch failed in the store.
    #[error("fetch {name} from {store}: {source}")]
    Fetch {
        /// The binary.
        name: String,
        /// The store.
        store: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// Reading a record (stat) failed in the store, or the record is not
    /// one of ours.
    #[error("stat {name} in {store}: {source}")]
    Stat {
        /// The binary.
        name: String,
        /// The store.
        store: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A list failed in the store.
    #[error("list binaries in {store}: {source}")]
    List {
        /// The store.
        store: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A remove failed in the store.
    #[error("remove {name} from {store}: {source}")]
    Remove {
        /// The binary.
        name: String,
        /// The store.
        store: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A file operation of the cache (or on a file being put) failed.
    #[error("{op} {path}: {source}")]
    CacheIo {
        /// The operation (`create`, `write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl BinError {
    /// A cache file operation's error.
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> BinError {
        BinError::CacheIo {
            op,
            path: path.display().to_string(),
            source: Arc::new(source),
        }
    }
}

/// A cause given as words.
#[derive(Debug)]
pub(crate) struct Because(pub(crate) String);

impl std::fmt::Display for Because {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Because {}

/// A cause from words.
pub(crate) fn because(why: impl Into<String>) -> Cause {
    Arc::new(Because(why.into()))
}
