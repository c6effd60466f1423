//! The embedded store: one machine's namespace, durable on local disk in a
//! redb database (a single-file, copy-on-write B-tree with ACID
//! transactions; a commit returns only after fsync, so an acknowledged write
//! survives `kill -9`, and a torn write is never visible).
//!
//! Transactions are committed on a writer thread of the store's own, so the
//! caller — a data-plane core in sigmad — never blocks on the disk: reads go
//! on during a commit's fsync (redb readers see the last commit and never
//! wait for the writer). Measured through sigmad (quick `sigmabench run ns`,
//! 3 alternating pairs): a read while another client writes back to back
//! went from 239–246 µs p50 (waiting behind each commit on the core) to
//! 12–13 µs; a lone write costs ~45 µs more (289–308 µs against 242–260 µs),
//! the two thread hand-offs.
//!
//! Versions are a store-wide revision counter bumped once per transaction
//! (like etcd's mod_revision). Leases live in memory: on one machine an
//! ephemeral entry's owner cannot outlive the daemon, so entries under a
//! lease are removed when the store opens, and an expiry pass (run by the
//! owner of the store, and before every call) removes those whose lease ended.

use super::store::{
    Change, Compare, LeaseId, Record, Store, WatchEvent, WatchReceiver, SCAN_KEYS_MAX, WATCH_EVENTS_MAX,
};
use super::NsError;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// version (u64 LE), lease (u64 LE, 0 = none), value.
const RECORD_HEADER_BYTES: usize = 16;

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct State {
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<(String, tokio::sync::mpsc::Sender<WatchEvent>)>,
}

/// How often ended leases are swept when nothing else calls the store.
pub const LEASE_SWEEP_PERIOD: Duration = Duration::from_millis(100);

/// The embedded, durable store. Clones share one database (for serving it
/// from a data-plane core while the control thread sweeps its leases).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    writer: Arc<Writer>,
}

/// A transaction for the writer thread, and where its answer goes.
struct Job {
    compares: Vec<Compare>,
    changes: Vec<Change>,
    reply: tokio::sync::oneshot::Sender<Result<Option<u64>, NsError>>,
}

/// The thread that commits transactions, so that the caller's thread (a
/// data-plane core) never blocks on the disk: a commit waits for an fsync
/// (hundreds of µs here), and reads go on meanwhile (redb reads see the last
/// commit and never wait for a writer). Stopped and joined when the last
/// clone of the store drops, so the database is closed when that returns.
struct Writer {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    fn start(inner: Arc<Inner>) -> Result<Writer, NsError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sigma-ns-writer".into())
            .spawn(move || {
                for job in rx {
                    let result = inner.apply(&job.compares, &job.changes);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| NsError::Store(format!("embedded store: starting its writer thread: {e}")))?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    async fn apply(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            compares: compares.to_vec(),
            changes: changes.to_vec(),
            reply,
        };
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(NsError::Store("embedded store: its writer thread is gone".into()));
        }
        // Once queued, a job runs even if its caller goes away (a timed-out
        // call's change still applies); a writer that dies may have
        // committed it first.
        answer.await.unwrap_or_else(|_| {
            Err(NsError::OutcomeUnknown(
                "embedded store: its writer thread died during the commit".into(),
            ))
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the jobs already queued.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

struct Inner {
    db: Database,
    state: Mutex<State>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn store_err(what: &str) -> impl Fn(redb::Error) -> NsError + '_ {
    move |e| NsError::Store(format!("embedded store {what}: {e}"))
}

fn encode(version: u64, lease: Option<LeaseId>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(bytes: &[u8]) -> Result<(Record, Option<LeaseId>), NsError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(NsError::Store(format!(
            "embedded store: corrupt record of {} bytes",
            bytes.len()
        )));
    }
    let version = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let lease = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let record = Record {
        value: Bytes::copy_from_slice(&bytes[RECORD_HEADER_BYTES..]),
        version,
    };
    Ok((record, (lease != 0).then_some(lease)))
}

/// Stops tracking `key` under the lease its removed record `old` had.
fn forget_lease_key(state: &mut State, key: &str, old: &[u8]) -> Result<(), NsError> {
    if let (_, Some(id)) = decode(old)? {
        if let Some(l) = state.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }
    Ok(())
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`, removing entries whose leases
    /// belonged to a previous run.
    pub fn open(path: &Path) -> Result<EmbeddedStore, NsError> {
        let db = Database::create(path)
            .map_err(|e| NsError::Store(format!("embedded store: opening {}: {e}", path.display())))?;
        let inner = Arc::new(Inner {
            db,
            state: Mutex::new(State {
                leases: HashMap::new(),
                next_lease: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64 | 1),
                watchers: Vec::new(),
            }),
        });
        inner.drop_stale_leased_keys()?;
        let writer = Arc::new(Writer::start(inner.clone())?);
        // Ended leases must go even when nobody calls the store. The sweeper
        // holds only weak references and stops with the store.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (weak_inner, weak_writer) = (Arc::downgrade(&inner), Arc::downgrade(&writer));
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(LEASE_SWEEP_PERIOD);
                loop {
                    tick.tick().await;
                    let (Some(inner), Some(writer)) = (weak_inner.upgrade(), weak_writer.upgrade()) else {
                        return;
                    };
                    for changes in inner.take_ended_leases() {
                        if let Err(e) = writer.apply(&[], &changes).await {
                            tracing::warn!(error = %e, "sweeping ended leases failed");
                        }
                    }
                }
            });
        } else {
            tracing::warn!("embedded store opened outside a tokio runtime: leases end only when the store is called");
        }
        Ok(EmbeddedStore { inner, writer })
    }

    /// Removes the keys of ended leases through the writer thread (so a
    /// caller on a data-plane core does not wait for the disk).
    async fn expire_ended(&self) -> Result<(), NsError> {
        for changes in self.inner.take_ended_leases() {
            self.writer.apply(&[], &changes).await?;
        }
        Ok(())
    }

    /// Removes the keys of every lease that has ended. Returns how many leases ended.
    pub fn expire_leases(&self) -> Result<usize, NsError> {
        self.inner.expire_leases()
    }
}

impl Inner {
    fn drop_stale_leased_keys(&self) -> Result<(), NsError> {
        let txn = self.db.begin_write().map_err(|e| store_err("begin")(e.into()))?;
        {
            let mut table = txn.open_table(KV).map_err(|e| store_err("open table")(e.into()))?;
            let mut stale = Vec::new();
            for item in table.iter().map_err(|e| store_err("scan")(e.into()))? {
                let (k, v) = item.map_err(|e| store_err("scan")(e.into()))?;
                if decode(v.value())?.1.is_some() {
                    stale.push(k.value().to_string());
                }
            }
            for key in &stale {
                table.remove(key.as_str()).map_err(|e| store_err("remove")(e.into()))?;
            }
            if !stale.is_empty() {
                tracing::info!(count = stale.len(), "removed ephemeral entries of a previous run");
            }
            txn.open_table(META).map_err(|e| store_err("open table")(e.into()))?;
        }
        txn.commit().map_err(|e| store_err("commit")(e.into()))?;
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expire_leases(&self) -> Result<usize, NsError> {
        let ended = self.take_ended_leases();
        for changes in &ended {
            self.apply(&[], changes)?;
        }
        Ok(ended.len())
    }

    /// Forgets every lease that has ended; the deletes of their keys, one
    /// transaction per lease.
    fn take_ended_leases(&self) -> Vec<Vec<Change>> {
        let now = Instant::now();
        let ended: Vec<(LeaseId, HashSet<String>)> = {
            let mut state = self.state();
            let ids: Vec<LeaseId> = state
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| state.leases.remove(&id).map(|l| (id, l.keys)))
                .collect()
        };
        ended
            .into_iter()
            .map(|(_, keys)| keys.into_iter().map(|key| Change::Delete { key }).collect())
            .collect()
    }

    fn notify(&self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        let mut state = self.state();
        state.watchers.retain(|(prefix, tx)| {
            for event in &events {
                let key = event.key();
                if key.starts_with(prefix.as_str()) && tx.try_send(event.clone()).is_err() {
                    // Full (the watcher lags) or closed: either way it goes;
                    // a lagging watcher sees its channel close and re-reads.
                    return false;
                }
            }
            true
        });
    }

    fn apply(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError> {
        let txn = self.db.begin_write().map_err(|e| store_err("begin")(e.into()))?;
        let mut events = Vec::with_capacity(changes.len());
        let revision;
        {
            let mut table = txn.open_table(KV).map_err(|e| store_err("open table")(e.into()))?;
            for compare in compares {
                let (key, want) = match compare {
                    Compare::Absent(k) => (k, None),
                    Compare::Version(k, v) => (k, Some(*v)),
                };
                let have = match table.get(key.as_str()).map_err(|e| store_err("get")(e.into()))? {
                    Some(v) => Some(decode(v.value())?.0.version),
                    None => None,
                };
                if have != want {
                    return Ok(None);
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| store_err("open table")(e.into()))?;
            revision = meta
                .get(REVISION)
                .map_err(|e| store_err("get")(e.into()))?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert(REVISION, revision)
                .map_err(|e| store_err("insert")(e.into()))?;
            let mut state = self.state();
            for change in changes {
                match change {
                    Change::Put { key, value, lease } => {
                        if let Some(id) = lease {
                            match state.leases.get_mut(id) {
                                Some(l) if l.deadline > Instant::now() => {
                                    l.keys.insert(key.clone());
                                }
                                _ => return Err(NsError::LeaseExpired(*id)),
                            }
                        }
                        table
                            .insert(key.as_str(), encode(revision, *lease, value).as_slice())
                            .map_err(|e| store_err("insert")(e.into()))?;
                        events.push(WatchEvent::Put(
                            key.clone(),
                            Record {
                                value: value.clone(),
                                version: revision,
                            },
                        ));
                    }
                    Change::Delete { key } => {
                        let old = table.remove(key.as_str()).map_err(|e| store_err("remove")(e.into()))?;
                        if let Some(old) = old {
                            forget_lease_key(&mut state, key, old.value())?;
                            events.push(WatchEvent::Delete(key.clone()));
                        }
                    }
                    Change::DeletePrefix { prefix } => {
                        let mut keys = Vec::new();
                        for item in table
                            .range(prefix.as_str()..)
                            .map_err(|e| store_err("scan")(e.into()))?
                        {
                            let (k, _) = item.map_err(|e| store_err("scan")(e.into()))?;
                            if !k.value().starts_with(prefix.as_str()) {
                                break;
                            }
                            keys.push(k.value().to_string());
                        }
                        for key in keys {
                            if let Some(old) = table.remove(key.as_str()).map_err(|e| store_err("remove")(e.into()))? {
                                forget_lease_key(&mut state, &key, old.value())?;
                            }
                            events.push(WatchEvent::Delete(key));
                        }
                    }
                }
            }
        }
        txn.commit().map_err(|e| store_err("commit")(e.into()))?;
        self.notify(events);
        Ok(Some(revision))
    }
}

impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Record>, NsError> {
        self.expire_ended().await?;
        let txn = self.inner.db.begin_read().map_err(|e| store_err("begin")(e.into()))?;
        let table = match txn.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(store_err("open table")(e.into())),
        };
        match table.get(key).map_err(|e| store_err("get")(e.into()))? {
            Some(v) => Ok(Some(decode(v.value())?.0)),
            None => Ok(None),
        }
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Record)>, NsError> {
        self.expire_ended().await?;
        let txn = self.inner.db.begin_read().map_err(|e| store_err("begin")(e.into()))?;
        let table = match txn.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(store_err("open table")(e.into())),
        };
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(|e| store_err("scan")(e.into()))? {
            let (k, v) = item.map_err(|e| store_err("scan")(e.into()))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if out.len() >= SCAN_KEYS_MAX {
                return Err(NsError::TooLarge {
                    what: format!("scan of {prefix:?}"),
                    len: out.len() + 1,
                    max: SCAN_KEYS_MAX,
                    limit: "keys in one scan (SCAN_KEYS_MAX)",
                });
            }
            out.push((key.to_string(), decode(v.value())?.0));
        }
        Ok(out)
    }

    async fn any_under(&self, prefix: &str) -> Result<bool, NsError> {
        self.expire_ended().await?;
        let txn = self.inner.db.begin_read().map_err(|e| store_err("begin")(e.into()))?;
        let table = match txn.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(store_err("open table")(e.into())),
        };
        let mut range = table.range(prefix..).map_err(|e| store_err("scan")(e.into()))?;
        match range.next() {
            Some(item) => {
                let (k, _) = item.map_err(|e| store_err("scan")(e.into()))?;
                Ok(k.value().starts_with(prefix))
            }
            None => Ok(false),
        }
    }

    async fn txn_revision(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError> {
        self.expire_ended().await?;
        self.writer.apply(compares, changes).await
    }

    async fn watch(&self, prefix: &str) -> Result<WatchReceiver, NsError> {
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_EVENTS_MAX);
        self.inner.state().watchers.push((prefix.to_string(), tx));
        Ok(rx)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, NsError> {
        let mut state = self.inner.state();
        let id = state.next_lease;
        state.next_lease = state.next_lease.wrapping_add(2).max(1);
        state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), NsError> {
        self.expire_ended().await?;
        let mut state = self.inner.state();
        match state.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                Ok(())
            }
            None => Err(NsError::LeaseExpired(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), NsError> {
        let keys = match self.inner.state().leases.remove(&lease) {
            Some(l) => l.keys,
            None => return Err(NsError::LeaseExpired(lease)),
        };
        let changes: Vec<Change> = keys.into_iter().map(|key| Change::Delete { key }).collect();
        self.writer.apply(&[], &changes).await.map(drop)
    }
}
