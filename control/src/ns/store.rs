//! The storage a namespace runs on: ordered keys with versions, atomic
//! compare-and-swap transactions, prefix watches and leases — what etcd
//! offers, and what the embedded store implements on one machine.

use super::NsError;
use bytes::Bytes;
use std::time::Duration;

/// A lease id (never 0).
pub type LeaseId = u64;

/// A stored value and its version (bumped on every write of the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value.
    pub value: Bytes,
    /// The version of this key.
    pub version: u64,
}

/// A condition a transaction checks before it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists with exactly this version.
    Version(String, u64),
}

/// A change a transaction applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets the key, attached to a lease if given (the key goes when the lease ends).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// The lease.
        lease: Option<LeaseId>,
    },
    /// Removes the key.
    Delete {
        /// The key.
        key: String,
    },
    /// Removes every key starting with the prefix, however many (one
    /// operation in etcd, not one per key).
    DeletePrefix {
        /// The prefix (not empty).
        prefix: String,
    },
}

/// What happened to a key, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed; what it holds now (so a watcher
    /// need not read it back).
    Put(String, Record),
    /// The key was removed (explicitly or because its lease ended).
    Delete(String),
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(k, _) | WatchEvent::Delete(k) => k,
        }
    }
}

/// A stream of events for the keys under a prefix.
pub type WatchReceiver = tokio::sync::mpsc::Receiver<WatchEvent>;

/// Events a watcher may have pending; a watcher that lags further is told
/// by its channel closing, and must re-read and re-watch.
pub const WATCH_EVENTS_MAX: usize = 1024;

/// Keys one scan returns, at most.
pub const SCAN_KEYS_MAX: usize = 100_000;

/// The storage of a namespace.
#[allow(async_fn_in_trait)] // The control plane runs on one current-thread runtime.
pub trait Store {
    /// The value and version of `key`.
    async fn get(&self, key: &str) -> Result<Option<Record>, NsError>;
    /// Every key starting with `prefix`, in order, with its record.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Record)>, NsError>;
    /// Whether any key starts with `prefix` (reads at most one key).
    async fn any_under(&self, prefix: &str) -> Result<bool, NsError>;
    /// Applies `changes` atomically if every comparison holds. Returns the
    /// store's revision after the transaction — the version every key it put
    /// now has — or `None` if a comparison did not hold.
    async fn txn_revision(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError>;

    /// Applies `changes` atomically if every comparison holds; `Ok(false)` if one did not.
    async fn txn(&self, compares: &[Compare], changes: &[Change]) -> Result<bool, NsError> {
        Ok(self.txn_revision(compares, changes).await?.is_some())
    }
    /// Events for keys starting with `prefix`, from now on.
    async fn watch(&self, prefix: &str) -> Result<WatchReceiver, NsError>;
    /// A new lease that ends `ttl` after its last keep-alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, NsError>;
    /// Extends a lease; `LeaseExpired` if it already ended.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), NsError>;
    /// Ends a lease now, removing its keys.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), NsError>;
}
