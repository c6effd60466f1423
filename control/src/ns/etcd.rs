//! The namespace store on etcd (v3 API, through the `etcd-client` crate),
//! for a cluster of machines sharing one namespace.
//!
//! Every key the [`Store`] methods see is stored under a key prefix (such as
//! `/sigma/ns/`), so σ can share an etcd with others; watches strip it again.
//!
//! **Versions are etcd's `mod_revision`**: the cluster-wide revision of the
//! key's last write. It changes on every write of the key and, unlike etcd's
//! per-key `version` (which restarts at 1 when a deleted key is created
//! again), never repeats: a compare against a version read before a delete
//! and re-create fails, as it must. It matches the embedded store, whose
//! versions are a store-wide revision too.
//!
//! Mapping:
//! - `get` is a linearizable range read of one key.
//! - `scan` reads the prefix in pages of [`SCAN_PAGE_KEYS`] keys, every page
//!   at the revision of the first, so the result is one consistent snapshot
//!   while no response exceeds [`MESSAGE_BYTES_MAX`]; more than
//!   [`SCAN_KEYS_MAX`] keys is `TooLarge`, as in the embedded store.
//! - `txn` is one etcd Txn: `Absent` compares `version == 0`, `Version`
//!   compares `mod_revision`; puts (with their lease) and deletes run only
//!   if every compare holds. etcd refuses a key twice in one Txn, so only the
//!   last change of each key is sent (the end state is the same). etcd also
//!   bounds a Txn to [`TXN_OPS_MAX`] compares and as many changes
//!   (`--max-txn-ops`; beyond it `txn` fails with `TooLarge`) and a request
//!   to 1.5 MiB (`--max-request-bytes`).
//! - `watch` is an etcd watch on the prefix, created (etcd confirms it)
//!   before `watch` returns. Every watch of a store shares one etcd watch
//!   stream, multiplexed by watch id as etcd's own client does
//!   (`WatchHub`); a task reads it and hands each watch's events to a
//!   bounded channel of [`WATCH_EVENTS_MAX`], which it closes (so the
//!   watcher re-reads) when the watcher lags, etcd cancels the watch or the
//!   stream fails.
//! - Leases are etcd leases; TTLs are rounded up to whole seconds (at least
//!   1), and etcd raises a TTL below its minimum (1.5 × election timeout,
//!   2 s with default settings). etcd deletes the keys of an ended lease,
//!   and watches see the deletes. A lease etcd does not know is
//!   `LeaseExpired`, for keep-alive, revoke and puts alike.
//!
//! **Runs on any executor.** etcd-client needs tokio (its gRPC connections
//! are tokio tasks), so each `EtcdStore` runs a current-thread tokio runtime
//! on a thread of its own (`sigma-etcd`); the store's futures only wait for
//! that runtime's answers, so they can be polled by tokio, the data plane's
//! cores, or anything else. The thread ends when the last clone of the
//! store is dropped; its watches close then.
//!
//! Every request has a deadline ([`REQUEST_TIMEOUT`] unless
//! [`EtcdStore::connect_with_timeout`] says otherwise), so an unreachable
//! etcd gives an error naming the operation and the endpoints, never a hang.
//! A change (txn, lease grant, keep-alive, revoke) that may have reached
//! etcd when it failed — it timed out, or the connection broke after it was
//! sent, in its last attempt or an earlier one — fails with
//! [`NsError::OutcomeUnknown`]; one that provably never left, or that etcd
//! refused, with [`NsError::Store`].

use super::store::{
    Change, Compare, LeaseId, Record, Store, WatchEvent, WatchReceiver, SCAN_KEYS_MAX, WATCH_EVENTS_MAX,
};
use super::NsError;
use bytes::Bytes;
use etcd_client as etcd;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long one etcd request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Compares, and changes, one etcd Txn may hold (etcd's `--max-txn-ops` default).
pub const TXN_OPS_MAX: usize = 128;
/// Keys one page of a scan reads.
pub const SCAN_PAGE_KEYS: usize = 64;
/// Bytes of one response from etcd, at most: a scan page of
/// [`SCAN_PAGE_KEYS`] largest files fits with room to spare.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// HTTP/2 keep-alive pings on the connection to etcd, so that a dead etcd
/// ends watches instead of leaving them silent. etcd closes connections that
/// ping more often than every 5 s (`--grpc-keepalive-min-time`).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

const _: () =
    assert!(SCAN_PAGE_KEYS * (super::FILE_BYTES_MAX + super::path::PATH_BYTES_MAX + 1024) < MESSAGE_BYTES_MAX);
const _: () = assert!(SCAN_PAGE_KEYS <= SCAN_KEYS_MAX);

/// A namespace store on an etcd cluster. Clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    conn: Conn,
    /// The runtime the etcd client runs on (its own thread, or a runtime
    /// handed to [`EtcdStore::connect_on`]); requests may come from any
    /// executor.
    runtime: Arc<RuntimeThread>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.conn.endpoints)
            .field("prefix", &self.conn.prefix)
            .field("timeout", &self.conn.timeout)
            .finish_non_exhaustive()
    }
}

/// The tokio runtime the etcd client lives on: on its own thread, stopped
/// (and its tasks dropped) when this drops, or a runtime someone else runs
/// (`_stop` is `None`).
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    _stop: Option<oneshot::Sender<()>>,
}

impl RuntimeThread {
    fn start() -> Result<RuntimeThread, NsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NsError::Store(format!("etcd: starting a tokio runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sigma-etcd".to_string())
            .spawn(move || {
                // Returns when the sender drops; dropping the runtime then
                // cancels the remaining tasks (watches, connections).
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| NsError::Store(format!("etcd: starting the sigma-etcd thread: {e}")))?;
        Ok(RuntimeThread {
            handle,
            _stop: Some(stop),
        })
    }

    /// Runs `work` on the runtime and waits for it from any executor. Dropping
    /// the returned future aborts the work.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, NsError>> + Send + 'static,
    ) -> Result<T, NsError> {
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(self.handle.spawn(work));
        // An etcd round trip takes hundreds of µs: a data-plane core
        // awaiting it parks at once rather than spin beside the thread
        // that runs it.
        sigma_dataplane::expect_long_wait();
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(NsError::Store(format!("etcd: the request's task failed: {e}"))),
        }
    }
}

/// The clients and what requests need to know, cloned into each request.
#[derive(Clone)]
struct Conn {
    /// Held so the connection's endpoint set lives as long as the store.
    _client: etcd::Client,
    kv: etcd::KvClient,
    watch: etcd::WatchClient,
    lease: etcd::LeaseClient,
    prefix: Arc<str>,
    endpoints: Arc<str>,
    timeout: Duration,
    /// Every watch of this store, on one etcd watch stream.
    hub: Arc<WatchHub>,
}

/// Which failures a request may retry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any `Unavailable` (connection refused, leader changed, no
    /// leader), and an attempt that outlasts its share of the deadline (a
    /// follower waiting for a leader that is gone).
    Idempotent,
    /// Writes that could apply twice: only failures that prove the request
    /// did not reach etcd's raft log (no connection, no leader).
    NotSent,
    /// σ's transactions: what they put and delete is the same however often
    /// they apply, and their compares fail once they have applied, so they
    /// retry like reads. After an attempt whose fate is unknown, the caller
    /// checks whether a "compares failed" answer means its own earlier
    /// attempt applied.
    Checked,
}

/// The share of a request's deadline one attempt may take before it is
/// retried (for the retries that allow it): a proposal sent to a follower
/// just as the leader dies waits there for the whole server timeout, while
/// a new leader takes about an election timeout to appear.
const ATTEMPTS_PER_DEADLINE: u32 = 4;
/// The shortest attempt.
const ATTEMPT_MIN: Duration = Duration::from_millis(250);

impl Retry {
    fn allows(self, e: &etcd::Error) -> bool {
        let etcd::Error::GRpcStatus(s) = e else { return false };
        if s.code() as i32 != 14
        /* UNAVAILABLE */
        {
            return false;
        }
        match self {
            Retry::Idempotent | Retry::Checked => true,
            Retry::NotSent => not_sent(e),
        }
    }

    /// Whether an attempt that outlasted its share may be retried.
    fn retries_slow_attempts(self) -> bool {
        self != Retry::NotSent
    }
}

/// Whether a failure proves the request never reached etcd's raft log.
fn not_sent(e: &etcd::Error) -> bool {
    let etcd::Error::GRpcStatus(s) = e else { return false };
    let m = s.message();
    m.contains("connect error") || m.contains("no leader")
}

/// Whether a failed request may have reached etcd (and a change in it been
/// applied): anything but a failure that proves it was not sent and an
/// answer in which etcd refused it.
fn maybe_sent(e: &etcd::Error) -> bool {
    if not_sent(e) {
        return false;
    }
    match e {
        // CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, ABORTED, INTERNAL,
        // UNAVAILABLE: no answer from etcd itself, or one that leaves the
        // request's fate open (etcd's own "request timed out").
        etcd::Error::GRpcStatus(s) => matches!(s.code() as i32, 1 | 2 | 4 | 10 | 13 | 14),
        // Failures inside the client before a request exists.
        etcd::Error::InvalidArgs(_) | etcd::Error::InvalidUri(_) | etcd::Error::TransportError(_) => false,
        _ => true,
    }
}

/// What a transaction leaves at a key.
struct Outcome {
    key: Vec<u8>,
    want: Want,
}

enum Want {
    /// The key holds this value.
    Value(Bytes),
    /// No key (with `prefix`: no key starting with it).
    Absent { prefix: bool },
}

/// Why one etcd request failed.
enum Failure {
    Etcd(etcd::Error),
    Timeout,
}

/// etcd's answer for a lease it does not have (any more).
fn lease_not_found(f: &Failure) -> bool {
    match f {
        Failure::Etcd(etcd::Error::GRpcStatus(s)) => s.message().contains("lease not found"),
        Failure::Etcd(etcd::Error::LeaseKeepAliveError(m)) => m.contains("lease not found"),
        _ => false,
    }
}

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix; `\0` means "to the end").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The record of a key etcd returned; `None` if its revision is not positive.
fn record(kv: etcd::KeyValue) -> Option<Record> {
    let version = u64::try_from(kv.mod_revision()).ok().filter(|&v| v != 0)?;
    let (_, value) = kv.into_key_value();
    Some(Record {
        value: Bytes::from(value),
        version,
    })
}

fn lease_id(lease: LeaseId) -> Option<i64> {
    i64::try_from(lease).ok().filter(|&id| id > 0)
}

fn change_key(c: &Change) -> &str {
    match c {
        Change::Put { key, .. } | Change::Delete { key } | Change::DeletePrefix { prefix: key } => key,
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`host:port` or
    /// `http://host:port`), storing every key under `prefix`, and checks that
    /// the cluster answers a linearizable read within [`REQUEST_TIMEOUT`].
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, NsError> {
        EtcdStore::connect_with_timeout(endpoints, prefix, REQUEST_TIMEOUT).await
    }

    /// As [`connect`](EtcdStore::connect), with `timeout` as the deadline of
    /// every request instead of [`REQUEST_TIMEOUT`].
    pub async fn connect_with_timeout(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, NsError> {
        EtcdStore::connect_via(RuntimeThread::start()?, endpoints, prefix, timeout).await
    }

    /// As [`connect_with_timeout`](EtcdStore::connect_with_timeout), but the
    /// client runs on `runtime` (a runtime its owner keeps running, such as
    /// sigmad's control thread) instead of a thread of its own. The store's
    /// futures may be polled anywhere: each request runs on `runtime` as a
    /// task, and the caller awaits its outcome, so a data-plane core serves
    /// requests on etcd without running tokio itself.
    pub async fn connect_on(
        runtime: tokio::runtime::Handle,
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, NsError> {
        let runtime = RuntimeThread {
            handle: runtime,
            _stop: None,
        };
        EtcdStore::connect_via(runtime, endpoints, prefix, timeout).await
    }

    /// Connects with the client on `runtime`.
    async fn connect_via(
        runtime: RuntimeThread,
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, NsError> {
        if endpoints.is_empty() {
            return Err(NsError::Store("etcd connect: no endpoints given".to_string()));
        }
        let (endpoints, prefix) = (endpoints.to_vec(), prefix.to_string());
        let conn = runtime.run(Conn::connect(endpoints, prefix, timeout)).await?;
        Ok(EtcdStore {
            conn,
            runtime: Arc::new(runtime),
        })
    }

    /// Runs a request on the client's runtime. Boxed: a request's future
    /// is large (gRPC), and the namespace calls that await several of them
    /// would otherwise carry them all on the caller's stack.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, NsError>> + Send + 'static,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, NsError>> + Send>> {
        let thread = self.runtime.clone();
        Box::pin(async move { thread.run(work).await })
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.conn.prefix
    }
}

impl Conn {
    async fn connect(endpoints: Vec<String>, prefix: String, timeout: Duration) -> Result<Conn, NsError> {
        let shown = endpoints.join(",");
        let options = etcd::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT);
        let client = match tokio::time::timeout(timeout, etcd::Client::connect(&endpoints, Some(options))).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(NsError::Store(format!("etcd connect to {shown}: {e}"))),
            Err(_) => {
                return Err(NsError::Store(format!(
                    "etcd connect to {shown}: no answer within {timeout:?}"
                )))
            }
        };
        let conn = Conn {
            kv: client.kv_client().max_decoding_message_size(MESSAGE_BYTES_MAX),
            watch: client.watch_client().max_decoding_message_size(MESSAGE_BYTES_MAX),
            lease: client.lease_client(),
            _client: client,
            prefix: prefix.as_str().into(),
            endpoints: shown.into(),
            timeout,
            hub: Arc::default(),
        };
        // The client connects lazily; one read proves the cluster is there
        // and has a leader.
        let probe = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let kv = conn.kv.clone();
        conn.call(Retry::Idempotent, || {
            let (mut kv, probe) = (kv.clone(), probe.clone());
            async move { kv.get(probe, Some(etcd::GetOptions::new().with_keys_only())).await }
        })
        .await
        .map_err(|f| conn.error("connect", &prefix, f))?;
        Ok(conn)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Runs one request under the deadline, retrying (with a short backoff,
    /// within the same deadline) failures that `retry` allows.
    async fn call<T, F>(&self, retry: Retry, request: impl FnMut() -> F) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, etcd::Error>>,
    {
        self.call_tracked(retry, &mut false, request).await
    }

    /// As [`call`](Conn::call); sets `unknown` when a retried attempt might
    /// have applied (it timed out, or failed after it may have been sent).
    async fn call_tracked<T, F>(
        &self,
        retry: Retry,
        unknown: &mut bool,
        mut request: impl FnMut() -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, etcd::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let attempt_max = (self.timeout / ATTEMPTS_PER_DEADLINE).max(ATTEMPT_MIN);
        let mut backoff = Duration::from_millis(5);
        loop {
            let attempt_end = if retry.retries_slow_attempts() {
                deadline.min(tokio::time::Instant::now() + attempt_max)
            } else {
                deadline
            };
            let time_left = |backoff| tokio::time::Instant::now() + backoff < deadline;
            match tokio::time::timeout_at(attempt_end, request()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if retry.allows(&e) && time_left(backoff) => {
                    tracing::debug!(endpoints = %self.endpoints, error = %e, "etcd: retrying");
                    *unknown |= !not_sent(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Ok(Err(e)) => return Err(Failure::Etcd(e)),
                Err(_) if attempt_end < deadline && time_left(Duration::ZERO) => {
                    tracing::debug!(endpoints = %self.endpoints, after = ?attempt_max, "etcd: no answer yet, retrying");
                    *unknown = true;
                }
                Err(_) => return Err(Failure::Timeout),
            }
        }
    }

    /// As [`call_tracked`](Conn::call_tracked), for a change: each attempt
    /// runs as a task of its own that an attempt's timeout does not cancel.
    /// A change once sent is never withdrawn (a withdrawal could not be
    /// relied on anyway: etcd may have applied it already), so one that
    /// times out stays in flight and applies, or is refused, when etcd
    /// answers — or ends with the connection (keep-alive pings bound that).
    async fn call_change<T, F>(
        &self,
        retry: Retry,
        unknown: &mut bool,
        mut request: impl FnMut() -> F,
    ) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd::Error>> + Send + 'static,
    {
        self.call_tracked(retry, unknown, || {
            // Dropping a JoinHandle detaches its task.
            let attempt = tokio::spawn(request());
            async move {
                attempt.await.unwrap_or_else(|e| {
                    Err(etcd::Error::IoError(std::io::Error::other(format!(
                        "the request's task failed: {e}"
                    ))))
                })
            }
        })
        .await
    }

    fn error(&self, op: &str, key: &str, f: Failure) -> NsError {
        match f {
            Failure::Etcd(e) => NsError::Store(format!("etcd {op} {key:?} at {}: {e}", self.endpoints)),
            Failure::Timeout => NsError::Store(format!(
                "etcd {op} {key:?} at {}: no answer within {:?}",
                self.endpoints, self.timeout
            )),
        }
    }

    /// The error of a change (a txn, a lease grant, keep-alive or revoke):
    /// `OutcomeUnknown` if it may have reached etcd, in this attempt or an
    /// earlier one (`unknown`), a plain store error if it provably did not
    /// or etcd refused it.
    fn change_error(&self, op: &str, key: &str, f: Failure, unknown: bool) -> NsError {
        let maybe_applied = unknown
            || match &f {
                Failure::Timeout => true,
                Failure::Etcd(e) => maybe_sent(e),
            };
        match self.error(op, key, f) {
            NsError::Store(message) if maybe_applied => NsError::OutcomeUnknown(message),
            other => other,
        }
    }

    fn bad(&self, op: &str, key: &str, why: &str) -> NsError {
        NsError::Store(format!("etcd {op} {key:?} at {}: {why}", self.endpoints))
    }

    async fn get(self, key: String) -> Result<Option<Record>, NsError> {
        let kv = self.kv.clone();
        let mut resp = self
            .call(Retry::Idempotent, || {
                let (mut kv, k) = (kv.clone(), self.full_key(&key));
                async move { kv.get(k, None).await }
            })
            .await
            .map_err(|f| self.error("get", &key, f))?;
        match resp.take_kvs().into_iter().next() {
            None => Ok(None),
            Some(found) => record(found)
                .map(Some)
                .ok_or_else(|| self.bad("get", &key, "a key without a revision")),
        }
    }

    async fn scan(self, prefix: String) -> Result<Vec<(String, Record)>, NsError> {
        let kv = self.kv.clone();
        let start = self.full_key(&prefix);
        let end = prefix_end(&start);
        let mut from = if start.is_empty() { vec![0] } else { start };
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut options = etcd::GetOptions::new()
                .with_range(end.clone())
                .with_limit(SCAN_PAGE_KEYS as i64);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let mut resp = self
                .call(Retry::Idempotent, || {
                    let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                })
                .await
                .map_err(|f| self.error("scan", &prefix, f))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            let page_len = kvs.len();
            for found in kvs {
                let Some(key) = found.key().strip_prefix(self.prefix.as_bytes()) else {
                    return Err(self.bad("scan", &prefix, "a key outside the prefix"));
                };
                let key = String::from_utf8(key.to_vec()).map_err(|_| self.bad("scan", &prefix, "a key not UTF-8"))?;
                if out.len() >= SCAN_KEYS_MAX {
                    return Err(NsError::TooLarge {
                        what: format!("scan of {prefix:?}"),
                        len: out.len() + 1,
                        max: SCAN_KEYS_MAX,
                        limit: "keys in one scan (SCAN_KEYS_MAX)",
                    });
                }
                let rec = record(found).ok_or_else(|| self.bad("scan", &prefix, "a key without a revision"))?;
                out.push((key, rec));
            }
            if !more || page_len == 0 {
                return Ok(out);
            }
        }
    }

    async fn any_under(self, prefix: String) -> Result<bool, NsError> {
        let kv = self.kv.clone();
        let start = self.full_key(&prefix);
        let options = etcd::GetOptions::new()
            .with_range(prefix_end(&start))
            .with_limit(1)
            .with_keys_only();
        let resp = self
            .call(Retry::Idempotent, || {
                let (mut kv, start, options) = (kv.clone(), start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await
            .map_err(|f| self.error("scan", &prefix, f))?;
        Ok(!resp.kvs().is_empty())
    }

    /// Runs a Txn that [`Store::txn`] built (each key once, within the
    /// bounds); `outcome` is the state it leaves, to tell after a retry
    /// whether an earlier attempt of it applied.
    async fn txn(
        self,
        request: etcd::Txn,
        outcome: Vec<Outcome>,
        first_key: String,
        leases: Vec<LeaseId>,
    ) -> Result<Option<u64>, NsError> {
        let kv = self.kv.clone();
        let mut unknown = false;
        match self
            .call_change(Retry::Checked, &mut unknown, || {
                let (mut kv, request) = (kv.clone(), request.clone());
                async move { kv.txn(request).await }
            })
            .await
        {
            Ok(resp) if resp.succeeded() => {
                let revision = resp.header().map_or(0, |h| h.revision());
                match u64::try_from(revision) {
                    Ok(r) if r > 0 => Ok(Some(r)),
                    _ => Err(self.bad("txn", &first_key, "a response without a revision")),
                }
            }
            // The compares failed, but an attempt whose fate is unknown came
            // first: if the state is exactly what this txn leaves, that
            // attempt applied (and made the compares fail).
            Ok(_) if unknown => self.applied(&outcome, &first_key).await,
            Ok(_) => Ok(None),
            // etcd does not say which lease; with one (the usual case) it is that one.
            Err(f) if lease_not_found(&f) && !leases.is_empty() => Err(NsError::LeaseExpired(leases[0])),
            Err(f) => Err(self.change_error("txn", &first_key, f, unknown)),
        }
    }

    /// Whether the store is in the state `outcome` describes; `Some`
    /// revision (the put keys' version) if so.
    async fn applied(&self, outcome: &[Outcome], first_key: &str) -> Result<Option<u64>, NsError> {
        if outcome.is_empty() {
            // Nothing to apply: the failed compares stand.
            return Ok(None);
        }
        let mut revision = None;
        for o in outcome {
            let key = o.key.clone();
            let options = match &o.want {
                Want::Absent { prefix: true } => Some(
                    etcd::GetOptions::new()
                        .with_range(prefix_end(&o.key))
                        .with_limit(1)
                        .with_keys_only(),
                ),
                _ => None,
            };
            let kv = self.kv.clone();
            let mut resp = self
                .call(Retry::Idempotent, || {
                    let (mut kv, key, options) = (kv.clone(), key.clone(), options.clone());
                    async move { kv.get(key, options).await }
                })
                .await
                // An earlier attempt's fate is still open.
                .map_err(|f| self.change_error("txn check", first_key, f, true))?;
            let found = resp.take_kvs().into_iter().next();
            match (&o.want, found) {
                (Want::Absent { .. }, None) => {}
                (Want::Value(v), Some(kv)) if kv.value() == &v[..] => {
                    revision = revision.or(u64::try_from(kv.mod_revision()).ok());
                }
                _ => return Ok(None),
            }
        }
        // Only deletes: the revision does not name a version; any positive one will do.
        Ok(Some(revision.unwrap_or(1)))
    }

    async fn watch(self, prefix: String) -> Result<WatchReceiver, NsError> {
        let key = self.full_key(&prefix);
        // Within the store's deadline, retried like a read: etcd confirms
        // the watch before `watch` returns, so every change after it is
        // reported. A stream that ended before confirming (a member lost)
        // or could not be made (no leader, connection refused) is tried again.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            let (tx, rx) = mpsc::channel(WATCH_EVENTS_MAX);
            let (created_tx, created) = oneshot::channel();
            let id = self.hub.add(tx, created_tx);
            let attempt = tokio::time::timeout_at(deadline, async {
                if let Err(f) = self.hub.send_create(&self, key.clone(), id).await {
                    let retry = matches!(&f, Failure::Etcd(e) if Retry::Idempotent.allows(e));
                    return Err((f, retry));
                }
                match created.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(reason)) => Err((
                        Failure::Etcd(etcd::Error::WatchError(format!("watch not created: {reason}"))),
                        false,
                    )),
                    Err(_) => Err((
                        Failure::Etcd(etcd::Error::WatchError(
                            "the watch stream ended before the watch was created".into(),
                        )),
                        true,
                    )),
                }
            })
            .await
            .unwrap_or(Err((Failure::Timeout, false)));
            let (failure, retry) = match attempt {
                Ok(()) => return Ok(rx),
                Err(e) => e,
            };
            self.hub.remove(id).await;
            if retry && tokio::time::Instant::now() + backoff < deadline {
                tracing::debug!(endpoints = %self.endpoints, "etcd: watch not created yet, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
                continue;
            }
            return Err(self.error("watch", &prefix, failure));
        }
    }

    async fn lease_grant(self, secs: i64) -> Result<LeaseId, NsError> {
        let lease = self.lease.clone();
        let what = format!("ttl {secs}s");
        let mut unknown = false;
        let resp = self
            .call_change(Retry::NotSent, &mut unknown, || {
                let mut lease = lease.clone();
                async move { lease.grant(secs, None).await }
            })
            .await
            .map_err(|f| self.change_error("lease grant", &what, f, unknown))?;
        if !resp.error().is_empty() {
            return Err(self.bad("lease grant", &what, resp.error()));
        }
        match u64::try_from(resp.id()) {
            Ok(id) if id != 0 => Ok(id),
            _ => Err(self.bad("lease grant", &what, &format!("etcd gave lease id {}", resp.id()))),
        }
    }

    async fn lease_keep_alive(self, lease: LeaseId, id: i64) -> Result<(), NsError> {
        let client = self.lease.clone();
        // One request on a keep-alive stream: etcd-client reads the first
        // answer and reports TTL <= 0 (the lease is gone) as "lease not found".
        let mut unknown = false;
        let result = self
            .call_change(Retry::Idempotent, &mut unknown, || {
                let mut client = client.clone();
                async move {
                    let (_keeper, _responses) = client.keep_alive(id).await?;
                    Ok(())
                }
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(f) if lease_not_found(&f) => Err(NsError::LeaseExpired(lease)),
            Err(f) => Err(self.change_error("lease keep-alive", &lease.to_string(), f, unknown)),
        }
    }

    async fn lease_revoke(self, lease: LeaseId, id: i64) -> Result<(), NsError> {
        let client = self.lease.clone();
        let mut unknown = false;
        match self
            .call_change(Retry::Idempotent, &mut unknown, || {
                let mut client = client.clone();
                async move { client.revoke(id).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if lease_not_found(&f) => Err(NsError::LeaseExpired(lease)),
            Err(f) => Err(self.change_error("lease revoke", &lease.to_string(), f, unknown)),
        }
    }
}

impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Record>, NsError> {
        self.run(self.conn.clone().get(key.to_string())).await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Record)>, NsError> {
        self.run(self.conn.clone().scan(prefix.to_string())).await
    }

    async fn any_under(&self, prefix: &str) -> Result<bool, NsError> {
        self.run(self.conn.clone().any_under(prefix.to_string())).await
    }

    async fn txn_revision(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError> {
        // etcd refuses a key twice in one Txn; the last change of a key decides its end state.
        let last: HashMap<&str, usize> = changes.iter().enumerate().map(|(i, c)| (change_key(c), i)).collect();
        let changes: Vec<&Change> = changes
            .iter()
            .enumerate()
            .filter(|(i, c)| last[change_key(c)] == *i)
            .map(|(_, c)| c)
            .collect();
        let first_key = changes
            .first()
            .map(|c| change_key(c))
            .or_else(|| {
                compares.first().map(|c| match c {
                    Compare::Absent(k) | Compare::Version(k, _) => k.as_str(),
                })
            })
            .unwrap_or("")
            .to_string();
        for (what, len) in [("compares", compares.len()), ("changes", changes.len())] {
            if len > TXN_OPS_MAX {
                return Err(NsError::TooLarge {
                    what: format!("etcd txn {what} (from {first_key:?})"),
                    len,
                    max: TXN_OPS_MAX,
                    limit: "operations in one etcd txn (TXN_OPS_MAX)",
                });
            }
        }

        let conn = &self.conn;
        let mut when = Vec::with_capacity(compares.len());
        for compare in compares {
            when.push(match compare {
                Compare::Absent(k) => etcd::Compare::version(conn.full_key(k), etcd::CompareOp::Equal, 0),
                Compare::Version(k, v) => match i64::try_from(*v) {
                    Ok(v) => etcd::Compare::mod_revision(conn.full_key(k), etcd::CompareOp::Equal, v),
                    // No etcd revision is that large: the compare cannot hold.
                    Err(_) => return Ok(None),
                },
            });
        }
        let mut leases = Vec::new();
        let mut then = Vec::with_capacity(changes.len());
        let mut outcome = Vec::with_capacity(changes.len());
        for change in changes {
            outcome.push(match change {
                Change::Put { key, value, .. } => Outcome {
                    key: conn.full_key(key),
                    want: Want::Value(value.clone()),
                },
                Change::Delete { key } => Outcome {
                    key: conn.full_key(key),
                    want: Want::Absent { prefix: false },
                },
                Change::DeletePrefix { prefix } => Outcome {
                    key: conn.full_key(prefix),
                    want: Want::Absent { prefix: true },
                },
            });
            then.push(match change {
                Change::Put { key, value, lease } => {
                    let options = match lease {
                        None => None,
                        Some(id) => {
                            let Some(etcd_id) = lease_id(*id) else {
                                return Err(NsError::LeaseExpired(*id));
                            };
                            leases.push(*id);
                            Some(etcd::PutOptions::new().with_lease(etcd_id))
                        }
                    };
                    etcd::TxnOp::put(conn.full_key(key), value.to_vec(), options)
                }
                Change::Delete { key } => etcd::TxnOp::delete(conn.full_key(key), None),
                Change::DeletePrefix { prefix } => {
                    let start = conn.full_key(prefix);
                    let end = prefix_end(&start);
                    etcd::TxnOp::delete(start, Some(etcd::DeleteOptions::new().with_range(end)))
                }
            });
        }
        let request = etcd::Txn::new().when(when).and_then(then);
        self.run(self.conn.clone().txn(request, outcome, first_key, leases))
            .await
    }

    async fn watch(&self, prefix: &str) -> Result<WatchReceiver, NsError> {
        self.run(self.conn.clone().watch(prefix.to_string())).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, NsError> {
        let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)).max(1);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        self.run(self.conn.clone().lease_grant(secs)).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), NsError> {
        let Some(id) = lease_id(lease) else {
            return Err(NsError::LeaseExpired(lease));
        };
        self.run(self.conn.clone().lease_keep_alive(lease, id)).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), NsError> {
        let Some(id) = lease_id(lease) else {
            return Err(NsError::LeaseExpired(lease));
        };
        self.run(self.conn.clone().lease_revoke(lease, id)).await
    }
}

/// How often the watch stream looks for watchers that went away, to
/// cancel their etcd watches.
const WATCH_PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Every watch of a store on one etcd watch stream, as etcd's own client
/// does: etcd multiplexes watches on a stream by watch id, so a watch costs
/// one create request on it rather than a gRPC stream of its own (5,000
/// streams made at once held other requests up for seconds). The stream is
/// made by the first watch and again after it ends; a task reads it and
/// hands each watch's events to its watcher's bounded channel. A watcher
/// that lags, a watch etcd cancels, and a stream that ends or fails all
/// close the watcher's channel, so that it re-reads and watches again.
#[derive(Default)]
struct WatchHub {
    /// The stream's request side and its generation; `None` before the
    /// first watch and after the stream ended.
    sender: tokio::sync::Mutex<Option<(u64, etcd::WatchRequestSender)>>,
    /// The watches on the stream, for the task that reads it.
    watches: std::sync::Mutex<HubWatches>,
}

#[derive(Default)]
struct HubWatches {
    by_id: HashMap<i64, HubWatch>,
    next_id: i64,
    generation: u64,
}

struct HubWatch {
    tx: mpsc::Sender<WatchEvent>,
    /// The stream its create request went on (0: not sent yet).
    generation: u64,
    /// Told when etcd confirms (or refuses) the watch.
    created: Option<oneshot::Sender<Result<(), String>>>,
}

impl WatchHub {
    fn watches(&self) -> std::sync::MutexGuard<'_, HubWatches> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a watch; returns its id.
    fn add(&self, tx: mpsc::Sender<WatchEvent>, created: oneshot::Sender<Result<(), String>>) -> i64 {
        let mut w = self.watches();
        w.next_id += 1;
        let id = w.next_id;
        w.by_id.insert(
            id,
            HubWatch {
                tx,
                generation: 0,
                created: Some(created),
            },
        );
        id
    }

    /// Sends the create request of watch `id` on `key`'s prefix, making the
    /// stream first if there is none.
    async fn send_create(self: &Arc<Self>, conn: &Conn, key: Vec<u8>, id: i64) -> Result<(), Failure> {
        let options = etcd::WatchOptions::new()
            .with_prefix()
            .with_fragment()
            .with_watch_id(id);
        // Held while the request goes out: the task of a stream that ends
        // takes it before it closes that stream's watches, so a watch is
        // either sent on a live stream or closed with it.
        let mut sender = self.sender.lock().await;
        if let Some((generation, s)) = sender.as_mut() {
            self.sent_on(id, *generation);
            if s.watch(key.clone(), Some(options.clone())).await.is_ok() {
                return Ok(());
            }
            // The stream is gone (its task ended): make a new one.
            *sender = None;
        }
        let generation = {
            let mut w = self.watches();
            w.generation += 1;
            w.generation
        };
        self.sent_on(id, generation);
        let mut client = conn.watch.clone();
        let stream = client.watch(key, Some(options)).await.map_err(Failure::Etcd)?;
        let (requests, responses) = stream.split();
        *sender = Some((generation, requests));
        tokio::spawn(
            self.clone()
                .read(responses, generation, conn.prefix.clone(), conn.endpoints.clone()),
        );
        Ok(())
    }

    fn sent_on(&self, id: i64, generation: u64) {
        if let Some(watch) = self.watches().by_id.get_mut(&id) {
            watch.generation = generation;
        }
    }

    /// Forgets watch `id` and cancels it in etcd.
    async fn remove(&self, id: i64) {
        self.watches().by_id.remove(&id);
        self.cancel(&[id], None).await;
    }

    /// Cancels `ids` on the stream (of `generation`, if given).
    async fn cancel(&self, ids: &[i64], generation: Option<u64>) {
        if ids.is_empty() {
            return;
        }
        let mut sender = self.sender.lock().await;
        if let Some((g, s)) = sender.as_mut() {
            if generation.is_none_or(|want| want == *g) {
                for &id in ids {
                    let _ = s.cancel(id).await;
                }
            }
        }
    }

    /// Hands one response to watch `id`: confirms its creation, or closes
    /// it when etcd cancelled it, its watcher lags or went away, or an event
    /// cannot be trusted. Returns whether the watch is to be cancelled in
    /// etcd (also a watch its caller gave up on, created after all).
    fn dispatch(&self, id: i64, resp: &etcd::WatchResponse, prefix: &str, endpoints: &str) -> bool {
        let mut w = self.watches();
        let Some(watch) = w.by_id.get_mut(&id) else {
            return resp.created() && !resp.canceled();
        };
        if resp.created() {
            if let Some(created) = watch.created.take() {
                let answer = if resp.canceled() {
                    Err(resp.cancel_reason().to_string())
                } else {
                    Ok(())
                };
                let _ = created.send(answer);
            }
        }
        if resp.canceled() {
            let (reason, compacted) = (resp.cancel_reason(), resp.compact_revision());
            tracing::warn!(%endpoints, reason, compacted, "etcd cancelled a watch; closing it");
            w.by_id.remove(&id);
            return false;
        }
        let close = match events_of(resp, prefix, endpoints) {
            Some(events) => events.into_iter().any(|event| match watch.tx.try_send(event) {
                Ok(()) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(%endpoints, "watcher lags; closing its watch");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => true,
            }),
            None => true,
        };
        if close {
            w.by_id.remove(&id);
        }
        close
    }

    /// Reads the stream of `generation` until it ends, handing out events.
    async fn read(
        self: Arc<Self>,
        mut responses: etcd::WatchResponseStream,
        generation: u64,
        prefix: Arc<str>,
        endpoints: Arc<str>,
    ) {
        let mut prune = tokio::time::interval(WATCH_PRUNE_EVERY);
        loop {
            let message = tokio::select! {
                m = responses.message() => m,
                _ = prune.tick() => {
                    let gone: Vec<i64> = {
                        let mut w = self.watches();
                        // Watchers gone; also those whose `watch` call was
                        // dropped before etcd confirmed (`created` closed).
                        let gone: Vec<i64> = w
                            .by_id
                            .iter()
                            .filter(|(_, h)| h.tx.is_closed() && h.created.as_ref().is_none_or(|c| c.is_closed()))
                            .map(|(id, _)| *id)
                            .collect();
                        for id in &gone {
                            w.by_id.remove(id);
                        }
                        gone
                    };
                    self.cancel(&gone, Some(generation)).await;
                    continue;
                }
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    tracing::warn!(%endpoints, "etcd watch stream ended; closing its watches");
                    break;
                }
                Err(e) => {
                    tracing::warn!(%endpoints, error = %e, "etcd watch stream failed; closing its watches");
                    break;
                }
            };
            let id = resp.watch_id();
            if self.dispatch(id, &resp, &prefix, &endpoints) {
                self.cancel(&[id], Some(generation)).await;
            }
        }
        // The stream is over: every watch on it closes (its watcher
        // re-reads and watches again, on a new stream).
        let mut sender = self.sender.lock().await;
        self.watches().by_id.retain(|_, h| h.generation != generation);
        if sender.as_ref().is_some_and(|(g, _)| *g == generation) {
            *sender = None;
        }
    }
}

/// The events of one watch response, keys relative to `prefix`; `None` if
/// one cannot be trusted (the watch is then closed, so its watcher re-reads).
fn events_of(resp: &etcd::WatchResponse, prefix: &str, endpoints: &str) -> Option<Vec<WatchEvent>> {
    let mut out = Vec::with_capacity(resp.events().len());
    for event in resp.events() {
        let Some(kv) = event.kv() else { continue };
        let Some(key) = kv
            .key()
            .strip_prefix(prefix.as_bytes())
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            let key = String::from_utf8_lossy(kv.key());
            tracing::warn!(%endpoints, %key, "etcd watch: a key outside the prefix or not UTF-8; skipped");
            continue;
        };
        out.push(match event.event_type() {
            etcd::EventType::Put => match u64::try_from(kv.mod_revision()) {
                Ok(version) if version > 0 => WatchEvent::Put(
                    key.to_string(),
                    Record {
                        value: Bytes::copy_from_slice(kv.value()),
                        version,
                    },
                ),
                _ => {
                    tracing::warn!(%endpoints, %key, "etcd watch: a put without a revision; closing the watch");
                    return None;
                }
            },
            etcd::EventType::Delete => WatchEvent::Delete(key.to_string()),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"/sigma/"), b"/sigma0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
