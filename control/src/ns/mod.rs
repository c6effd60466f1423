//! named: the realm namespace.
//!
//! Per realm, a tree of directories, files (bounded bytes), mounts (a name
//! for a σEP endpoint) and ephemeral entries tied to a lease. The tree lives
//! in a [`Store`] — the embedded durable store on one machine
//! (`embedded`), etcd in a cluster (`etcd`) — and [`Namespace`]
//! implements the API on top of any store, binding every call to one realm.

pub mod conformance;
pub mod embedded;
pub mod entry;
pub mod etcd;
pub mod path;
pub mod service;
pub mod store;

pub use entry::{Entry, EntryKind, Stat};
pub use path::NsPath;
pub use service::Namespace;
pub use store::{LeaseId, Store};

/// Bytes of a file's contents, at most.
pub const FILE_BYTES_MAX: usize = 512 * 1024;
/// Entries one readdir returns, at most.
pub const READDIR_ENTRIES_MAX: usize = 10_000;
/// Watches being set up at once (a store watch made and the first check
/// read), at most; the rest wait their turn. Thousands of procs that all
/// start watching at once would otherwise put thousands of requests ahead
/// of every other call in the store's queue (on etcd: 5,000 watch setups
/// held a put for 0.5–0.9 s and timed some setups out). Waiting watches
/// hold no permit.
pub const WATCH_SETUPS_MAX: usize = 8;

/// Why a namespace call failed. Each variant names what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NsError {
    /// The path does not parse.
    #[error("invalid path {path:?}: {why}")]
    InvalidPath {
        /// The path given (cut to the limit).
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The realm name does not parse.
    #[error("invalid realm name {0:?}: use 1-64 of a-z 0-9 - _")]
    InvalidRealm(String),
    /// No such realm.
    #[error("unknown realm {0:?}")]
    UnknownRealm(String),
    /// The realm exists already.
    #[error("realm {0:?} exists")]
    RealmExists(String),
    /// Nothing at the path.
    #[error("{path}: not found")]
    NotFound {
        /// The path.
        path: String,
    },
    /// Something is at the path already.
    #[error("{path}: exists")]
    Exists {
        /// The path.
        path: String,
    },
    /// A directory was needed.
    #[error("{path}: not a directory")]
    NotDir {
        /// The path.
        path: String,
    },
    /// A file (or mount) was needed.
    #[error("{path}: is a directory")]
    IsDir {
        /// The path.
        path: String,
    },
    /// A directory with entries cannot be removed or renamed.
    #[error("{path}: directory not empty")]
    NotEmpty {
        /// The path.
        path: String,
    },
    /// A value beyond its limit.
    #[error("{what}: {len} exceeds the limit of {max} {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
        /// What the limit bounds, in its unit, and the constant's name
        /// (`"bytes of a file (FILE_BYTES_MAX)"`).
        limit: &'static str,
    },
    /// The lease expired or was revoked.
    #[error("lease {0} expired or revoked")]
    LeaseExpired(u64),
    /// The caller may not do this (e.g. change the root realm from another realm).
    #[error("permission denied: {0}")]
    Denied(String),
    /// A mount's endpoint is not there, or a selector found no instance.
    #[error("{path}: {why}")]
    Unresolvable {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// A watch ended because nothing happened within its time.
    #[error("{path}: nothing happened within {waited:?}")]
    TimedOut {
        /// The path watched.
        path: String,
        /// How long the watch waited.
        waited: std::time::Duration,
    },
    /// A concurrent change won; the caller may retry.
    #[error("{path}: changed concurrently, retry")]
    Conflict {
        /// The path.
        path: String,
    },
    /// The store failed (IO, corruption, unreachable) before the change
    /// could reach it, or a read failed: nothing was applied.
    #[error("store: {0}")]
    Store(String),
    /// A change was sent, but no answer came (a timeout, a connection lost
    /// after sending): it may or may not have been applied. The caller
    /// should read before retrying.
    #[error("{0}; the change may or may not have been applied: read before retrying")]
    OutcomeUnknown(String),
}
