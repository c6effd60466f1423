//! sigmad's content-addressed binary cache: one file per digest, filled
//! from the registry at most once per binary however many spawns ask at
//! once, and bounded in bytes: past its bound the least recently used
//! files no spawn holds pinned are evicted.

use super::digest::{merge_pieces, Digest, Hasher, PieceHash, PieceHasher};
use super::elf;
use super::error::{because, BinError};
use super::io::{CacheIo, HashedPiece};
#[cfg(doc)]
use super::limits::RECORD_TTL_DEFAULT;
use super::limits::{
    BIN_BYTES_MAX, BIN_CACHE_BYTES_DEFAULT, CACHE_WRITES_IN_FLIGHT_MAX, CACHE_WRITE_BYTES, ELF_HEADERS_BYTES_MAX,
    HASH_PIECES_IN_FLIGHT_PER_CORE, HASH_PIECE_BYTES, RECORD_MEMOS_MAX,
};
use super::name::BinName;
use super::registry::{size_mismatch, BinRegistry, ObjectBody, PieceStream, Record};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Permissions of a cached binary: read and execute, never written again.
const CACHED_MODE: u32 = 0o555;
/// A file's mode while it is filled and until its check passed: nobody
/// can exec it (a spawn may hold it early, `EarlyFile`).
const FILLING_MODE: u32 = 0o400;
/// Names of files being filled start with this; they are never exec'd.
const TEMP_PREFIX: &str = ".fill.";

/// A binary in the cache, ready to exec. It holds its file pinned (see
/// [`CachePin`]): the cache does not evict the file while this, or a
/// clone, lives. Drop it once the file has been opened (a spawn: once the
/// sandbox holds the binary as a detached bind mount).
#[derive(Debug, Clone)]
pub struct CachedBin {
    /// The name it was asked for.
    pub name: BinName,
    /// Its digest: the cache file's name.
    pub digest: Digest,
    /// Its size.
    pub bytes: u64,
    /// The cache file.
    pub path: PathBuf,
    /// Held for its drop: the file's pin.
    _pin: CachePin,
}

/// Equal when the same binary is at the same path; the pins are not
/// compared (each holds the same file).
impl PartialEq for CachedBin {
    fn eq(&self, other: &CachedBin) -> bool {
        (&self.name, &self.digest, self.bytes, &self.path) == (&other.name, &other.digest, other.bytes, &other.path)
    }
}

impl Eq for CachedBin {}

/// Keeps one cache file from eviction while it lives. A [`CachedBin`]
/// holds one from the moment the cache hands out its path; a spawn keeps
/// it until the sandbox has taken its bind mount of the file (with
/// `open_tree`, before the clone), after which the file may be removed: the
/// proc keeps the inode. A clone pins again; a drop releases.
pub struct CachePin {
    index: Arc<Mutex<Index>>,
    digest: Digest,
}

impl Clone for CachePin {
    fn clone(&self) -> CachePin {
        *lock(&self.index).pins.entry(self.digest).or_insert(0) += 1;
        CachePin {
            index: self.index.clone(),
            digest: self.digest,
        }
    }
}

impl Drop for CachePin {
    fn drop(&mut self) {
        lock(&self.index).unpin(&self.digest);
    }
}

impl std::fmt::Debug for CachePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachePin({})", self.digest)
    }
}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Asks answered.
    pub gets: u64,
    /// Asks answered from the cache without reading the object.
    pub hits: u64,
    /// Asks that joined a fetch already under way.
    pub joined: u64,
    /// Objects fetched into the cache (successfully or not).
    pub fetches: u64,
    /// Cache files re-hashed on their first use by this process.
    pub verifications: u64,
    /// Cache files found corrupt and removed.
    pub corrupt_removed: u64,
    /// Cache files removed to keep the cache within its bound (when it
    /// opened, and to make room for fills since).
    pub evicted: u64,
    /// Bytes of the cache files now (fills in flight not counted).
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    gets: AtomicU64,
    hits: AtomicU64,
    joined: AtomicU64,
    fetches: AtomicU64,
    verifications: AtomicU64,
    corrupt_removed: AtomicU64,
    evicted: AtomicU64,
}

type Outcome = Option<Result<CachedBin, BinError>>;

/// The cache. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct BinCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: BinRegistry,
    dir: PathBuf,
    io: Arc<dyn CacheIo>,
    record_ttl: Duration,
    /// Fetches under way, by name: later asks wait on the first one's
    /// outcome instead of starting their own.
    flights: Mutex<HashMap<BinName, watch::Receiver<Outcome>>>,
    /// Records fetched lately: spawns within `record_ttl` skip the store.
    memos: Mutex<HashMap<BinName, (Record, Instant)>>,
    /// The cache files: sizes, uses, pins, fills in flight.
    index: Arc<Mutex<Index>>,
    temp_seq: AtomicU64,
    counters: Counters,
    /// Whether a local store's file goes in as a hard link (`link_in`)
    /// rather than a copy.
    link_local: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while holding one: every
    // critical section is a single insert, remove or lookup, or (the
    // index) a few of them with no panic between.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the cache knows of its files, under one lock: each file's size and
/// last use, the pins, and the fills in flight with the bytes they will
/// take. The bound holds for `bytes + reserved`: a fill makes room (and
/// reserves it) before it fetches.
#[derive(Debug)]
struct Index {
    /// The bound on `bytes + reserved`.
    max_bytes: u64,
    /// The cache files by digest.
    files: HashMap<Digest, Resident>,
    /// Bytes of `files`.
    bytes: u64,
    /// Bytes reserved by fills in flight.
    reserved: u64,
    /// Fills in flight by digest (two names of one digest may fill at
    /// once): their file, if there is one already, is not evicted.
    filling: HashMap<Digest, u32>,
    /// Pins held by digest (only counts above zero are kept).
    pins: HashMap<Digest, u32>,
    /// The last stamp of a use: each use takes the next.
    clock: u64,
}

/// One cache file.
#[derive(Debug)]
struct Resident {
    /// Its size, as counted in `Index::bytes`.
    bytes: u64,
    /// Its last use's stamp (a get that returned it, its fill, or its
    /// place in the order found at open): the least is evicted first.
    used: u64,
    /// Whether this process has hashed (or written) it.
    verified: bool,
}

impl Index {
    fn new(max_bytes: u64) -> Index {
        Index {
            max_bytes,
            files: HashMap::new(),
            bytes: 0,
            reserved: 0,
            filling: HashMap::new(),
            pins: HashMap::new(),
            clock: 0,
        }
    }

    /// Adds a file (or marks one there verified, if `verified`), used now.
    fn insert(&mut self, digest: Digest, bytes: u64, verified: bool) {
        self.clock += 1;
        let used = self.clock;
        match self.files.get_mut(&digest) {
            Some(file) => {
                file.used = used;
                file.verified |= verified;
            }
            None => {
                self.bytes += bytes;
                self.files.insert(digest, Resident { bytes, used, verified });
            }
        }
    }

    /// Pins `digest`'s file and counts a use of it, if it is there (and
    /// verified, with `verified_only`).
    fn pin(&mut self, digest: &Digest, verified_only: bool) -> bool {
        let Some(file) = self.files.get_mut(digest) else {
            return false;
        };
        if verified_only && !file.verified {
            return false;
        }
        self.clock += 1;
        file.used = self.clock;
        *self.pins.entry(*digest).or_insert(0) += 1;
        true
    }

    fn unpin(&mut self, digest: &Digest) {
        if let Some(n) = self.pins.get_mut(digest) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(digest);
            }
        }
    }

    /// Forgets a file (removed, or found gone).
    fn forget(&mut self, digest: &Digest) {
        if let Some(file) = self.files.remove(digest) {
            self.bytes -= file.bytes;
        }
    }

    /// The file to evict next: the least recently used one that is neither
    /// pinned nor being filled. A scan: evictions are rare (a fill past
    /// the bound) and the files few (hundreds in the default bound).
    fn victim(&self) -> Option<Digest> {
        self.files
            .iter()
            .filter(|(d, _)| !self.pins.contains_key(d) && !self.filling.contains_key(d))
            .min_by_key(|(d, f)| (f.used, **d))
            .map(|(d, _)| *d)
    }

    /// Ends a fill's reservation.
    fn release(&mut self, digest: &Digest, bytes: u64) {
        self.reserved -= bytes;
        if let Some(n) = self.filling.get_mut(digest) {
            *n -= 1;
            if *n == 0 {
                self.filling.remove(digest);
            }
        }
    }
}

/// The bytes one fill in flight will take, set aside within the bound
/// (`Inner::reserve`); given back when dropped unless the filled file is
/// committed to the index.
struct Reservation {
    index: Arc<Mutex<Index>>,
    digest: Digest,
    bytes: u64,
    done: bool,
}

impl Reservation {
    /// The fill placed its file: it joins the index, verified, used now
    /// and pinned for the caller.
    fn commit(mut self) -> CachePin {
        let mut index = lock(&self.index);
        index.release(&self.digest, self.bytes);
        index.insert(self.digest, self.bytes, true);
        index.pin(&self.digest, false);
        drop(index);
        self.done = true;
        CachePin {
            index: self.index.clone(),
            digest: self.digest,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.index).release(&self.digest, self.bytes);
        }
    }
}

impl BinCache {
    /// A cache in `dir` (made if missing) filled from `registry`, its file
    /// IO done by `io`, reusing a record for `record_ttl` before asking the
    /// store again (zero: ask on every get; [`RECORD_TTL_DEFAULT`] is the
    /// default), bounded to [`BIN_CACHE_BYTES_DEFAULT`] bytes (see
    /// [`BinCache::open_bounded`]).
    pub fn open(
        dir: impl AsRef<Path>,
        registry: BinRegistry,
        io: Arc<dyn CacheIo>,
        record_ttl: Duration,
    ) -> Result<BinCache, BinError> {
        BinCache::open_bounded(dir, registry, io, record_ttl, BIN_CACHE_BYTES_DEFAULT)
    }

    /// As [`BinCache::open`], holding at most `max_bytes` of cache files.
    /// A fill that would pass the bound first evicts the least recently
    /// used files (used: returned by a get, filled, or found at open) that
    /// no [`CachePin`] holds and no fill is writing; if those are not
    /// enough it is refused ([`BinError::CacheFull`]), and a binary larger
    /// than the bound is always refused ([`BinError::CacheTooSmall`]).
    /// Evicted files leave the cache's memos too: a later get fetches again.
    /// Files hard-linked from a local store count by their size.
    ///
    /// The files already in `dir` (an earlier run's) count toward the
    /// bound, ordered by the later of their access and modification times
    /// (access times are coarse: with `relatime` they move at most once a
    /// day after the first read, with `noatime` never); past the bound the
    /// oldest are removed now. Leftovers of fills a crash interrupted are
    /// removed; files not named by a digest are left alone and not counted.
    pub fn open_bounded(
        dir: impl AsRef<Path>,
        registry: BinRegistry,
        io: Arc<dyn CacheIo>,
        record_ttl: Duration,
        max_bytes: u64,
    ) -> Result<BinCache, BinError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| BinError::io("create directory", &dir, e))?;
        let entries = std::fs::read_dir(&dir).map_err(|e| BinError::io("read directory", &dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| BinError::io("read directory", &dir, e))?;
            let path = entry.path();
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name.starts_with(TEMP_PREFIX) {
                std::fs::remove_file(&path).map_err(|e| BinError::io("remove leftover", &path, e))?;
                continue;
            }
            // Only the names the cache writes: lowercase hex of a digest.
            let Some(digest) = Digest::parse_hex(&file_name).filter(|d| d.to_string() == file_name) else {
                continue;
            };
            let meta = entry.metadata().map_err(|e| BinError::io("stat", &path, e))?;
            if !meta.is_file() {
                continue;
            }
            let touched = meta.accessed().ok().max(meta.modified().ok());
            found.push((touched.unwrap_or(std::time::UNIX_EPOCH), digest, meta.len()));
        }
        found.sort();
        let mut index = Index::new(max_bytes);
        for &(_, digest, bytes) in &found {
            index.insert(digest, bytes, false);
        }
        let counters = Counters::default();
        let mut oldest = found.iter();
        while index.bytes > max_bytes {
            let Some(&(_, digest, bytes)) = oldest.next() else {
                break;
            };
            let path = dir.join(digest.to_string());
            std::fs::remove_file(&path).map_err(|e| BinError::io("evict", &path, e))?;
            index.forget(&digest);
            counters.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %path.display(), bytes, max_bytes, "evicted a cached binary: the cache is over its bound");
        }
        Ok(BinCache {
            inner: Arc::new(Inner {
                registry,
                dir,
                io,
                record_ttl,
                flights: Mutex::default(),
                memos: Mutex::default(),
                index: Arc::new(Mutex::new(index)),
                temp_seq: AtomicU64::new(0),
                counters,
                link_local: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// With `on`, a local store's file on the cache's filesystem goes into
    /// the cache as a hard link, checked by reading it, instead of a copy
    /// (see `Inner::link_in`): a cold start writes nothing. The cache file
    /// and the store's then share one inode, so a write behind sigmad's
    /// back to either shows in both: the digest check refuses it, but the
    /// cache cannot fetch a good copy from the store. Off by default.
    pub fn link_local_files(&self, on: bool) {
        self.inner.link_local.store(on, Ordering::Relaxed);
    }
    /// Remembers `record`, just written to the store by this sigmad (a
    /// put), as a fetched record is remembered: a start of it within the
    /// record TTL skips the store's record read (on S3 a signed GET; here
    /// 190 µs through object_store's blocking pool). Deploying a binary
    /// and starting it is the common case.
    pub fn remember_put(&self, record: &Record) {
        self.inner.remember(record);
    }

    /// Forgets what the cache remembers of `name`'s record (it was removed
    /// from the store): the next get asks the store, which says it is gone.
    pub fn forget_record(&self, name: &BinName) {
        lock(&self.inner.memos).remove(name);
    }

    /// The registry it fills from.
    pub fn registry(&self) -> &BinRegistry {
        &self.inner.registry
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            gets: c.gets.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            joined: c.joined.load(Ordering::Relaxed),
            fetches: c.fetches.load(Ordering::Relaxed),
            verifications: c.verifications.load(Ordering::Relaxed),
            corrupt_removed: c.corrupt_removed.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            bytes: lock(&self.inner.index).bytes,
        }
    }

    /// The cache file of `digest`, if this process has it verified. Not
    /// pinned: a fill may evict it at any time (a get returns it pinned).
    pub fn lookup(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.inner.path_of(digest);
        let verified = lock(&self.inner.index).files.get(digest).is_some_and(|f| f.verified);
        (verified && path.exists()).then_some(path)
    }

    /// A warm hit without waiting: `name`'s memo is fresh (within the record
    /// TTL) and its file was verified and is still there; pinned, as from
    /// [`BinCache::get`]. Runs where the caller runs (no runtime needed):
    /// two locks and a stat.
    pub fn try_fresh(&self, name: &BinName) -> Option<CachedBin> {
        let hit = self.inner.fresh_hit(name)?;
        self.inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// The binary `name`, in the cache: from the cache if it is there,
    /// else fetched once, however many ask at once (they all get the one
    /// fetch's outcome), after making room within the bound (see
    /// [`BinCache::open_bounded`]). The file stays pinned (never evicted)
    /// while the returned [`CachedBin`] lives. Must run inside a tokio
    /// runtime.
    pub async fn get(&self, name: &BinName) -> Result<CachedBin, BinError> {
        self.get_early(name, None).await
    }

    /// [`BinCache::get`], telling `early` of the file as soon as a fetch
    /// that this call starts has it under its temporary name, before it is
    /// checked (see [`EarlyFile`]). `early` hears nothing (its sender is
    /// dropped) on a hit, when the call joins another's fetch, or when the
    /// fetch fails before it has a file.
    pub async fn get_early(&self, name: &BinName, early: Option<EarlyNotice>) -> Result<CachedBin, BinError> {
        let inner = &self.inner;
        inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        if let Some(hit) = inner.fresh_hit(name) {
            inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let mut outcome = {
            let mut flights = lock(&inner.flights);
            match flights.get(name) {
                Some(rx) => {
                    inner.counters.joined.fetch_add(1, Ordering::Relaxed);
                    rx.clone()
                }
                None => {
                    let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
                        inner
                            .registry
                            .fetch_error(name, because(format!("no tokio runtime to fetch on: {e}")))
                    })?;
                    let (tx, rx) = watch::channel(None);
                    flights.insert(name.clone(), rx.clone());
                    // The fetch is a task of its own: a spawn that stops
                    // waiting does not cancel it for the others.
                    let this = self.inner.clone();
                    let name = name.clone();
                    runtime.spawn(async move {
                        let result = this.resolve(&name, early).await;
                        let _ = tx.send(Some(result));
                        lock(&this.flights).remove(&name);
                    });
                    rx
                }
            }
        };
        let done = match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        done.unwrap_or_else(|| {
            Err(inner
                .registry
                .fetch_error(name, because("the fetch task ended without an outcome")))
        })
    }
}

impl Inner {
    fn path_of(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.to_string())
    }

    /// A hit needing no store call and no hashing: a fresh record whose
    /// file this process has verified, pinned before its path is checked.
    fn fresh_hit(&self, name: &BinName) -> Option<CachedBin> {
        let record = self.fresh_record(name)?;
        let pin = self.pin(&record.digest, true)?;
        let path = self.path_of(&record.digest);
        path.exists().then(|| CachedBin {
            name: name.clone(),
            digest: record.digest,
            bytes: record.bytes,
            path,
            _pin: pin,
        })
    }

    /// A pin on `digest`'s file, counting a use of it, if the index has it
    /// (and has it verified, with `verified_only`).
    fn pin(&self, digest: &Digest, verified_only: bool) -> Option<CachePin> {
        lock(&self.index).pin(digest, verified_only).then(|| CachePin {
            index: self.index.clone(),
            digest: *digest,
        })
    }

    fn fresh_record(&self, name: &BinName) -> Option<Record> {
        let memos = lock(&self.memos);
        let (record, at) = memos.get(name)?;
        (at.elapsed() < self.record_ttl).then(|| record.clone())
    }

    fn remember(&self, record: &Record) {
        if self.record_ttl.is_zero() {
            return;
        }
        let mut memos = lock(&self.memos);
        if memos.len() >= RECORD_MEMOS_MAX && !memos.contains_key(&record.name) {
            memos.retain(|_, (_, at)| at.elapsed() < self.record_ttl);
            if memos.len() >= RECORD_MEMOS_MAX {
                let oldest = memos.iter().min_by_key(|(_, (_, at))| *at).map(|(n, _)| n.clone());
                if let Some(oldest) = oldest {
                    memos.remove(&oldest);
                }
            }
        }
        memos.insert(record.name.clone(), (record.clone(), Instant::now()));
    }

    /// The fetch task: record, then the cache file or a fetch into it.
    async fn resolve(&self, name: &BinName, early: Option<EarlyNotice>) -> Result<CachedBin, BinError> {
        let record = match self.fresh_record(name) {
            Some(record) => record,
            None => {
                let record = self.registry.stat(name).await?;
                self.remember(&record);
                record
            }
        };
        if record.bytes > BIN_BYTES_MAX {
            return Err(BinError::TooLarge {
                name: name.to_string(),
                bytes: record.bytes,
                limit: BIN_BYTES_MAX,
            });
        }
        let path = self.path_of(&record.digest);
        let cached = |pin| CachedBin {
            name: name.clone(),
            digest: record.digest,
            bytes: record.bytes,
            path: path.clone(),
            _pin: pin,
        };
        // A file in the index is pinned while it is checked: no fill's
        // eviction removes it meanwhile.
        if let Some(pin) = self.pin(&record.digest, false) {
            if path.exists() {
                let verified = lock(&self.index).files.get(&record.digest).is_some_and(|f| f.verified);
                if verified || self.verify(&path, &record).await? {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(cached(pin));
                }
            } else {
                // Removed behind the cache's back.
                lock(&self.index).forget(&record.digest);
            }
        }
        let reservation = self.reserve(&record)?;
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        self.fill(&record, &path, early).await?;
        Ok(cached(reservation.commit()))
    }

    /// Makes room within the bound for a fill of `record`, evicting the
    /// least recently used files neither pinned nor being filled, and
    /// reserves its bytes until the fill ends. An evicted file is renamed
    /// aside under the index lock (so no later fill of its digest can be
    /// removed in its place) and unlinked after; a proc started from it
    /// keeps its inode.
    fn reserve(&self, record: &Record) -> Result<Reservation, BinError> {
        let mut evicted = Vec::new();
        let reserved = {
            let mut index = lock(&self.index);
            let max = index.max_bytes;
            let name = || record.name.to_string();
            let dir = || self.dir.display().to_string();
            if record.bytes > max {
                return Err(BinError::CacheTooSmall {
                    name: name(),
                    bytes: record.bytes,
                    max,
                    dir: dir(),
                });
            }
            loop {
                if index.bytes + index.reserved + record.bytes <= max {
                    index.reserved += record.bytes;
                    *index.filling.entry(record.digest).or_insert(0) += 1;
                    break Ok(());
                }
                let Some(victim) = index.victim() else {
                    break Err(BinError::CacheFull {
                        name: name(),
                        bytes: record.bytes,
                        max,
                        held: index.bytes + index.reserved,
                        dir: dir(),
                    });
                };
                let path = self.path_of(&victim);
                let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
                let aside = self
                    .dir
                    .join(format!("{TEMP_PREFIX}{victim}.{}.{seq}.evicted", std::process::id()));
                match std::fs::rename(&path, &aside) {
                    Ok(()) => {
                        let bytes = index.files.get(&victim).map_or(0, |f| f.bytes);
                        evicted.push((victim, aside, bytes));
                    }
                    // Removed behind the cache's back: nothing to evict.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => break Err(BinError::io("evict (rename aside)", &path, e)),
                }
                index.forget(&victim);
            }
        };
        if !evicted.is_empty() {
            lock(&self.memos).retain(|_, (r, _)| !evicted.iter().any(|(d, _, _)| *d == r.digest));
        }
        let mut asides = Vec::with_capacity(evicted.len());
        for (digest, aside, bytes) in evicted {
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%digest, bytes, for_binary = %record.name, "evicted a cached binary to make room within the cache's bound");
            asides.push(aside);
        }
        // Unlinked off the fetch's path, on tokio's blocking pool (inline
        // without a runtime), EVICTED_UNLINK_DELAY later, once the start
        // whose fetch evicted them has run: the unlink of a file's last
        // link truncates it, and truncation waits for the writeback of its
        // dirty pages. A binary put and removed from the store 30 s before
        // (the kernel's dirty expiry) and evicted now cost its fetch 11 ms
        // that way (sigmabench's third cold-start round, 15.8 ms fetches
        // against 4.4-4.7); run at once beside the start, it still cost
        // 0.6 ms of fetch (docs/spawn-path.md). A file left by a sigmad
        // that stops meanwhile has the temporary prefix: the next open
        // removes it.
        if !asides.is_empty() {
            let remove = move || {
                for aside in asides {
                    if let Err(e) = std::fs::remove_file(&aside) {
                        tracing::warn!(path = %aside.display(), error = %e, "could not remove an evicted cache file");
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                // A sleep on the blocking pool, not a tokio timer: a
                // runtime without timers serves too.
                Ok(rt) => drop(rt.spawn_blocking(move || {
                    std::thread::sleep(super::limits::EVICTED_UNLINK_DELAY);
                    remove()
                })),
                Err(_) => remove(),
            }
        }
        reserved?;
        Ok(Reservation {
            index: self.index.clone(),
            digest: record.digest,
            bytes: record.bytes,
            done: false,
        })
    }

    /// Re-hashes a cache file this process has not verified yet (one left
    /// by an earlier run). A file that does not match is removed: false.
    async fn verify(&self, path: &Path, record: &Record) -> Result<bool, BinError> {
        self.counters.verifications.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(File::open(path).map_err(|e| BinError::io("open", path, e))?);
        let len = file.metadata().map_err(|e| BinError::io("stat", path, e))?.len();
        let mut matches = len == record.bytes;
        if matches {
            let hashed = self
                .hash_file(&file, len, 0)
                .await
                .map_err(|e| BinError::io("read", path, e))?;
            matches = hashed.bytes == len && hashed.digest == record.digest;
        }
        if matches {
            lock(&self.index).insert(record.digest, record.bytes, true);
            return Ok(true);
        }
        self.counters.corrupt_removed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), name = %record.name, "cached binary does not match its digest; removed, fetching again");
        lock(&self.index).forget(&record.digest);
        std::fs::remove_file(path).map_err(|e| BinError::io("remove corrupt", path, e))?;
        Ok(false)
    }

    /// Fetches `record`'s object into a temporary file, hashing and
    /// checking it as it streams, and renames it to `path` only if it is
    /// whole, a static executable and of the recorded digest.
    async fn fill(&self, record: &Record, path: &Path, mut early: Option<EarlyNotice>) -> Result<(), BinError> {
        let body = self.registry.open_object(record).await?;
        if let (true, ObjectBody::File(_, source_path)) = (self.link_local.load(Ordering::Relaxed), &body) {
            if self.link_in(record, path, source_path, &mut early).await? {
                return Ok(());
            }
        }
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{}.{}.{seq}", record.digest, std::process::id()));
        let guard = TempGuard(Some(temp.clone()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILLING_MODE)
            .open(&temp)
            .map_err(|e| BinError::io("create", &temp, e))?;
        // Told of before its check (a spawn makes its sandbox from it);
        // the file is not executable until `place` made it so.
        tell_early(early, path, &temp);
        let file = Arc::new(file);
        if let ObjectBody::Parts(parts) = body {
            self.fill_parts(record, &file, &temp, parts).await?;
            drop(file);
            return Self::place(guard, &temp, path).await;
        }
        let mut fill = Fill::new(self, record, file.clone(), &temp);
        match body {
            ObjectBody::File(source, source_path) => {
                self.read_through(Arc::new(source), &source_path, record, &mut fill)
                    .await?;
            }
            ObjectBody::Stream(mut stream) => {
                while let Some(chunk) = self.next_within(record, &mut stream).await? {
                    fill.take(chunk, false).await?;
                }
            }
            ObjectBody::Parts(_) => unreachable!("parts are filled above"),
        }
        fill.finish().await?;
        drop(fill);
        drop(file);
        // No fsync: the cache needs no durability, only integrity, and it
        // has that without one. A file this process did not write is
        // re-hashed on its first use (a torn file after a crash fails the
        // check and is fetched again), and the rename makes a file appear
        // only whole. An fsync of 10 MiB and of the directory cost tens of
        // ms on a cold start here.
        Self::place(guard, &temp, path).await
    }

    /// Fills `file` (at `temp`) from a remote object's ranged parts, cut
    /// into [`HASH_PIECE_BYTES`] pieces as they come: each piece, once
    /// whole and of its length, is written and hashed as a BLAKE3 subtree
    /// on a cache-IO core, [`HASH_PIECES_IN_FLIGHT_PER_CORE`] per core,
    /// while the control thread receives the next ones (from whichever
    /// part); the chaining values merge in file order, and size, ELF
    /// headers and digest are checked as a stream's fill checks them.
    /// Before, whole 4 MiB parts were handed over as they completed, and
    /// since every part is in flight at once, they completed together at
    /// the end: the writing and hashing of the whole object (4.5–9 ms)
    /// came after its last byte.
    async fn fill_parts(
        &self,
        record: &Record,
        file: &Arc<File>,
        temp: &Path,
        mut pieces: PieceStream,
    ) -> Result<(), BinError> {
        let head_len = ELF_HEADERS_BYTES_MAX.min(record.bytes as usize);
        let count = record.bytes.div_ceil(HASH_PIECE_BYTES) as usize;
        let mut hashed: Vec<Option<HashedPiece>> = (0..count).map(|_| None).collect();
        // Marked when received: a piece whose job is still running is not
        // in `hashed` yet.
        let mut seen = vec![false; count];
        let mut jobs = futures::stream::FuturesUnordered::new();
        let mut received = 0u64;
        let write_err = |e| BinError::io("write", temp, e);
        while let Some((offset, chunks)) = self.next_part_within(record, &mut pieces).await? {
            let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            self.registry.count_bytes_read(len);
            // Checked before it is hashed: a piece of another length or
            // place than its range's is no subtree of the file.
            let index = (offset / HASH_PIECE_BYTES) as usize;
            let want = record.bytes.saturating_sub(offset).min(HASH_PIECE_BYTES);
            if offset % HASH_PIECE_BYTES != 0 || index >= count || seen[index] || len != want {
                return Err(self.size_mismatch(record, received + len));
            }
            seen[index] = true;
            received += len;
            let head = if offset == 0 { head_len } else { 0 };
            let job = self
                .io
                .write_hash_piece(file.clone(), offset, chunks, PieceHasher::piece(offset), head);
            jobs.push(futures::FutureExt::map(job, move |r| (index, r)));
            if jobs.len() >= self.pieces_in_flight() {
                if let Some((i, piece)) = jobs.next().await {
                    hashed[i] = Some(piece.map_err(write_err)?);
                }
            }
        }
        while let Some((i, piece)) = jobs.next().await {
            hashed[i] = Some(piece.map_err(write_err)?);
        }
        // Fewer than two pieces: fewer bytes than a ranged object has.
        if received != record.bytes || count < 2 {
            return Err(self.size_mismatch(record, received));
        }
        let mut merged = Pieces::default();
        for piece in hashed {
            merged.push(piece.ok_or_else(|| self.size_mismatch(record, received))?);
        }
        self.check_hashed(record, &merged.finish())
    }

    /// `record`'s object is not `got` bytes long, as its record says.
    fn size_mismatch(&self, record: &Record, got: u64) -> BinError {
        size_mismatch(record, self.registry.store_name(), got)
    }

    /// `head` (the first bytes of `record`'s object) is a static
    /// executable's.
    fn check_elf(record: &Record, head: &[u8]) -> Result<(), BinError> {
        elf::check_headers(head)
            .map(|_| ())
            .map_err(|why| BinError::NotStaticElf {
                name: record.name.to_string(),
                why,
            })
    }

    /// `got` is `record`'s digest.
    fn check_digest(&self, record: &Record, got: Digest) -> Result<(), BinError> {
        if got == record.digest {
            return Ok(());
        }
        Err(BinError::DigestMismatch {
            name: record.name.to_string(),
            store: self.registry.store_name().to_owned(),
            expected: record.digest.to_string(),
            got: got.to_string(),
        })
    }

    /// A file hashed in pieces is `record`'s object: as long as its
    /// record says, a static executable, of its digest.
    fn check_hashed(&self, record: &Record, hashed: &HashedFile) -> Result<(), BinError> {
        if hashed.bytes != record.bytes {
            return Err(self.size_mismatch(record, hashed.bytes));
        }
        Self::check_elf(record, &hashed.head)?;
        self.check_digest(record, hashed.digest)
    }

    /// Pieces of one file hashed at once: [`HASH_PIECES_IN_FLIGHT_PER_CORE`]
    /// per core serving cache IO.
    fn pieces_in_flight(&self) -> usize {
        self.io.parallelism().max(1) * HASH_PIECES_IN_FLIGHT_PER_CORE
    }

    /// The next item of `stream`, a remote object's, within the store's
    /// reply deadline (silence: the store unreachable); None at its end.
    async fn next_in_time<T>(
        &self,
        record: &Record,
        stream: &mut futures::stream::BoxStream<'static, T>,
    ) -> Result<Option<T>, BinError> {
        tokio::time::timeout(self.registry.deadline(), stream.next())
            .await
            .map_err(|_| {
                self.registry
                    .unreachable("fetch", &record.name.to_string(), "no answer".into())
            })
    }

    /// The next piece of a ranged fetch ([`Inner::next_in_time`]); its own
    /// error as its part mapped it.
    async fn next_part_within(
        &self,
        record: &Record,
        parts: &mut PieceStream,
    ) -> Result<Option<(u64, Vec<Bytes>)>, BinError> {
        self.next_in_time(record, parts).await?.transpose()
    }

    /// The next chunk of a remote object's body ([`Inner::next_in_time`]);
    /// a stream error as a fetch error.
    async fn next_within<T>(
        &self,
        record: &Record,
        stream: &mut futures::stream::BoxStream<'static, object_store::Result<T>>,
    ) -> Result<Option<T>, BinError> {
        self.next_in_time(record, stream)
            .await?
            .transpose()
            .map_err(|e| self.registry.fetch_error(&record.name, Arc::new(e)))
    }

    /// Makes the checked file `from` (kept by `guard` until then)
    /// read-only and executable and renames it to `path`, on tokio's
    /// blocking pool (after a copy: the rename of a file just written).
    async fn place(guard: TempGuard, from: &Path, path: &Path) -> Result<(), BinError> {
        let (from, to) = (from.to_path_buf(), path.to_path_buf());
        tokio::task::spawn_blocking(move || make_executable_and_rename(&from, &to))
            .await
            .map_err(|e| BinError::io("rename into place", path, std::io::Error::other(e.to_string())))??;
        guard.keep();
        Ok(())
    }

    /// Feeds `fill` with `file` (`record.bytes` of it) in chunks of
    /// `CACHE_WRITE_BYTES`, one read ahead: the next chunk is read (by the
    /// cache's IO, on a data-plane core) while this one is hashed.
    async fn read_through(
        &self,
        file: Arc<File>,
        source_path: &Path,
        record: &Record,
        fill: &mut Fill<'_>,
    ) -> Result<(), BinError> {
        let read = |offset: u64| {
            let want = (record.bytes - offset).min(CACHE_WRITE_BYTES as u64) as usize;
            tokio::spawn(self.io.read_at(file.clone(), offset, want))
        };
        let failed = |e: std::io::Error| {
            self.registry
                .fetch_error(&record.name, Arc::new(BinError::io("read", source_path, e)))
        };
        let mut next = (record.bytes > 0).then(|| read(0));
        let mut offset = 0u64;
        while let Some(pending) = next.take() {
            let chunk = pending
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("read task: {e}"))))
                .map_err(failed)?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            if offset < record.bytes {
                next = Some(read(offset));
            }
            fill.take(chunk, true).await?;
        }
        Ok(())
    }

    /// A local store's file on the cache's filesystem goes in without a
    /// copy: hard-linked under a temporary name, read back and checked as a
    /// fill would (size, static ELF, digest; nothing written), made
    /// read-only and executable, renamed into place. A cold start then
    /// reads the binary once instead of writing 10 MiB: the writes of a
    /// copy, back to back, met the page cache's dirty throttling and took
    /// 30 ms of a cold start. False (nothing done) if the link cannot be
    /// made (another filesystem): the caller copies.
    ///
    /// The store's files are written to a temporary name and renamed, never
    /// changed in place, so the inode the cache shares stays as checked; a
    /// store file changed in place by hand after it was linked would go
    /// unnoticed until sigmad restarts (which re-hashes on first use).
    async fn link_in(
        &self,
        record: &Record,
        path: &Path,
        source_path: &Path,
        early: &mut Option<EarlyNotice>,
    ) -> Result<bool, BinError> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let link = self.dir.join(format!(
            "{TEMP_PREFIX}{}.{}.{seq}.link",
            record.digest,
            std::process::id()
        ));
        if std::fs::hard_link(source_path, &link).is_err() {
            return Ok(false);
        }
        let guard = TempGuard(Some(link.clone()));
        let file = Arc::new(std::fs::File::open(&link).map_err(|e| BinError::io("open", &link, e))?);
        let len = file.metadata().map_err(|e| BinError::io("stat", &link, e))?.len();
        if len != record.bytes {
            return Err(self.size_mismatch(record, len));
        }
        tell_early(early.take(), path, &link);
        let head_len = ELF_HEADERS_BYTES_MAX.min(record.bytes as usize);
        let hashed = self.hash_file(&file, len, head_len).await.map_err(|e| {
            self.registry
                .fetch_error(&record.name, Arc::new(BinError::io("read", source_path, e)))
        })?;
        self.registry.count_bytes_read(hashed.bytes);
        self.check_hashed(record, &hashed)?;
        drop(file);
        // Made read-only and executable, then renamed into place, here: two
        // metadata calls, like the link, the open and the stat above. On
        // tokio's blocking pool (as `place` does after a copy) the hop there
        // and back cost more than the calls: the bench's linked fetch took
        // 1.69–2.66 ms p50 this way against 2.02–3.27 ms (three alternated
        // runs of `cargo bench -p sigma-control --bench bins_digest`).
        make_executable_and_rename(&link, path)?;
        guard.keep();
        Ok(true)
    }

    /// Hashes `file` (`len` bytes, as stat says) where it lies, keeping its
    /// first `head` bytes: a file of one piece ([`HASH_PIECE_BYTES`]) or
    /// less whole, a larger one as pieces spread over the cache IO's cores,
    /// [`HASH_PIECES_IN_FLIGHT_PER_CORE`] per core, each read and hashed on
    /// its core, their chaining values merged in file order. Nothing is
    /// copied out of the page cache but the head, and the hash runs on all
    /// the cores serving cache IO at once: on this VM the cold fetch of an
    /// 11 MiB file took 7.5-8.4 ms in 1 MiB reads hashed on the control
    /// thread, 4.3-4.5 ms this way (quick runs).
    async fn hash_file(&self, file: &Arc<File>, len: u64, head: usize) -> std::io::Result<HashedFile> {
        if len <= HASH_PIECE_BYTES {
            let piece = self
                .io
                .hash_piece(file.clone(), 0, len, PieceHasher::whole(), head)
                .await?;
            let PieceHash::Whole(digest) = piece.hash else {
                unreachable!("a whole hasher gives a digest")
            };
            return Ok(HashedFile {
                digest,
                bytes: piece.bytes,
                head: piece.head,
            });
        }
        let in_flight = self.pieces_in_flight();
        let mut hashed = futures::stream::iter(0..len.div_ceil(HASH_PIECE_BYTES))
            .map(|i| {
                let offset = i * HASH_PIECE_BYTES;
                let piece_len = (len - offset).min(HASH_PIECE_BYTES);
                let head = if i == 0 { head } else { 0 };
                self.io
                    .hash_piece(file.clone(), offset, piece_len, PieceHasher::piece(offset), head)
            })
            .buffered(in_flight);
        let mut merged = Pieces::default();
        while let Some(piece) = hashed.next().await {
            merged.push(piece?);
        }
        Ok(merged.finish())
    }
}

/// Makes the checked file `from` read-only and executable
/// ([`CACHED_MODE`]: until then nobody could exec it) and renames it to
/// `to`, its cache path.
fn make_executable_and_rename(from: &Path, to: &Path) -> Result<(), BinError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(CACHED_MODE))
        .map_err(|e| BinError::io("chmod", from, e))?;
    std::fs::rename(from, to).map_err(|e| BinError::io("rename into place", to, e))
}

/// A fetch's file before it is checked: `file` (an `O_PATH` fd) is the
/// inode that will be renamed to `path` if its size, headers and digest
/// match, and never will be otherwise. sigmad makes a cold start's
/// sandbox from it while the fetch goes on
/// (`sigma_sandbox::Sandbox::prepare_file`), which is taken only once
/// `path` names this inode: nothing of the file runs before it was
/// checked.
#[derive(Debug)]
pub struct EarlyFile {
    /// Where the file will be once checked.
    pub path: PathBuf,
    /// The file now, under its temporary name.
    pub file: std::os::fd::OwnedFd,
}

/// Where a fetch tells of its [`EarlyFile`].
pub type EarlyNotice = tokio::sync::oneshot::Sender<EarlyFile>;

/// Sends `early` (if any) the file at `temp`, bound for `path`; an
/// `O_PATH` fd, which holds no write access (an exec is not refused as
/// ETXTBSY for it) and reads nothing. A file that cannot be opened is not
/// told of: the start goes cold.
fn tell_early(early: Option<EarlyNotice>, path: &Path, temp: &Path) {
    let Some(early) = early else { return };
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(temp);
    if let Ok(file) = opened {
        let _ = early.send(EarlyFile {
            path: path.to_path_buf(),
            file: file.into(),
        });
    }
}

/// The pieces of one file hashed so far, in file order (each a subtree):
/// their chaining values, the bytes they covered and the first one's head.
#[derive(Default)]
struct Pieces {
    cvs: Vec<[u8; 32]>,
    bytes: u64,
    head: Vec<u8>,
}

impl Pieces {
    /// Takes the next piece.
    fn push(&mut self, piece: HashedPiece) {
        let PieceHash::Subtree(cv) = piece.hash else {
            unreachable!("a piece hasher gives a chaining value")
        };
        if self.cvs.is_empty() {
            self.head = piece.head;
        }
        self.cvs.push(cv);
        self.bytes += piece.bytes;
    }

    /// The file's digest and the rest (at least two pieces).
    fn finish(self) -> HashedFile {
        HashedFile {
            digest: merge_pieces(&self.cvs),
            bytes: self.bytes,
            head: self.head,
        }
    }
}

/// A file hashed where it lies ([`Inner::hash_file`]).
struct HashedFile {
    /// Its digest (meaningful only if `bytes` is its whole length).
    digest: Digest,
    /// Bytes read: less than asked only if the file ended early.
    bytes: u64,
    /// Its first bytes, as many as asked for.
    head: Vec<u8>,
}

/// Removes a temporary file unless kept: whatever ends a fill (or an
/// upload's piece) early leaves nothing behind.
pub(crate) struct TempGuard(pub(crate) Option<PathBuf>);

impl TempGuard {
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a temporary file");
                }
            }
        }
    }
}

/// One fill in progress: the bytes received so far, hashed as they pass,
/// handed to the cache IO in chunks of up to `CACHE_WRITE_BYTES`.
struct Fill<'a> {
    inner: &'a Inner,
    record: &'a Record,
    file: Arc<File>,
    temp: &'a Path,
    hasher: Hasher,
    received: u64,
    /// The first bytes, until the ELF headers are checked.
    head: Option<Vec<u8>>,
    /// How many first bytes the check needs.
    head_len: usize,
    /// Stream chunks being gathered into one write.
    pending: BytesMut,
    /// Where `pending` starts in the file.
    pending_at: u64,
    writes: VecDeque<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl<'a> Fill<'a> {
    fn new(inner: &'a Inner, record: &'a Record, file: Arc<File>, temp: &'a Path) -> Fill<'a> {
        Fill {
            inner,
            record,
            file,
            temp,
            hasher: Hasher::new(),
            received: 0,
            head: Some(Vec::with_capacity(ELF_HEADERS_BYTES_MAX.min(record.bytes as usize))),
            head_len: ELF_HEADERS_BYTES_MAX.min(record.bytes as usize),
            pending: BytesMut::new(),
            pending_at: 0,
            writes: VecDeque::new(),
        }
    }

    /// Takes the next chunk: counts, hashes and checks it, and writes it
    /// (at once if `whole`, else once enough is gathered).
    async fn take(&mut self, chunk: Bytes, whole: bool) -> Result<(), BinError> {
        let record = self.record;
        let at = self.received;
        self.received += chunk.len() as u64;
        self.inner.registry.count_bytes_read(chunk.len() as u64);
        if self.received > record.bytes {
            return Err(self.size_mismatch());
        }
        self.hasher.update(&chunk);
        if let Some(head) = &mut self.head {
            let room = self.head_len - head.len();
            head.extend_from_slice(&chunk[..room.min(chunk.len())]);
            if head.len() == self.head_len {
                self.check_head()?;
            }
        }
        if whole {
            return self.write(at, chunk).await;
        }
        if self.pending.is_empty() {
            self.pending_at = at;
        }
        self.pending.extend_from_slice(&chunk);
        if self.pending.len() >= CACHE_WRITE_BYTES {
            let full = self.pending.split().freeze();
            return self.write(self.pending_at, full).await;
        }
        Ok(())
    }

    fn check_head(&mut self) -> Result<(), BinError> {
        match self.head.take() {
            Some(head) => Inner::check_elf(self.record, &head),
            None => Ok(()),
        }
    }

    fn size_mismatch(&self) -> BinError {
        self.inner.size_mismatch(self.record, self.received)
    }

    /// Starts a write, after waiting for the oldest if too many are in
    /// flight. Writes are tasks: they run while the next chunk comes.
    async fn write(&mut self, at: u64, bytes: Bytes) -> Result<(), BinError> {
        if self.writes.len() >= CACHE_WRITES_IN_FLIGHT_MAX {
            self.wait_oldest().await?;
        }
        let io = self.inner.io.write_all_at(self.file.clone(), at, bytes);
        self.writes.push_back(tokio::spawn(io));
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<(), BinError> {
        let Some(oldest) = self.writes.pop_front() else {
            return Ok(());
        };
        let done = oldest
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("write task: {e}"))));
        done.map_err(|e| BinError::io("write", self.temp, e))
    }

    /// The end of the object: all of it came, it is a static executable of
    /// the recorded digest, and every write is done.
    async fn finish(&mut self) -> Result<(), BinError> {
        if self.received != self.record.bytes {
            return Err(self.size_mismatch());
        }
        self.check_head()?;
        self.inner.check_digest(self.record, self.hasher.finish())?;
        if !self.pending.is_empty() {
            let rest = self.pending.split().freeze();
            self.write(self.pending_at, rest).await?;
        }
        while !self.writes.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bins::limits::RECORD_TTL_DEFAULT;
    use crate::bins::{BlockingIo, StoreConfig};

    const KIB: u64 = 1024;
    /// The test binaries' size: a cache of 250 KiB holds two.
    const SIZE: u64 = 100 * KIB;
    const BOUND: u64 = 250 * KIB;

    /// A static executable (an ELF header and one `PT_LOAD`) of `SIZE`
    /// bytes, told apart from the others by `tag`.
    fn elf(tag: u8) -> Bytes {
        Bytes::from(crate::bins::elf::minimal_static(SIZE as usize, tag))
    }

    struct Setup {
        dir: tempfile::TempDir,
        cache_dir: PathBuf,
        registry: BinRegistry,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let registry = BinRegistry::open(&StoreConfig::local(dir.path().join("store"))).unwrap();
        Setup {
            cache_dir: dir.path().join("cache"),
            dir,
            registry,
        }
    }

    impl Setup {
        fn open(&self, max_bytes: u64) -> BinCache {
            let io: Arc<dyn CacheIo> = Arc::new(BlockingIo);
            BinCache::open_bounded(
                &self.cache_dir,
                self.registry.clone(),
                io,
                RECORD_TTL_DEFAULT,
                max_bytes,
            )
            .unwrap()
        }

        /// Puts binary `name` with `elf(tag)`.
        async fn put(&self, name: &str, tag: u8) -> Record {
            self.registry
                .put(&BinName::parse(name).unwrap(), elf(tag))
                .await
                .unwrap()
        }

        fn reads(&self) -> u64 {
            self.registry.stats().object_reads
        }

        /// The names in the cache directory, sorted.
        /// The cache dir's files, once the evicted ones set aside are
        /// gone (they are removed in the background; within 5 s).
        fn files(&self) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut names: Vec<String> = std::fs::read_dir(&self.cache_dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                if !names.iter().any(|n| n.ends_with(".evicted")) || Instant::now() > deadline {
                    return names;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// The cache files of `records`, sorted.
    fn named(records: &[&Record]) -> Vec<String> {
        let mut names: Vec<String> = records.iter().map(|r| r.digest.to_string()).collect();
        names.sort();
        names
    }

    fn pins_held(cache: &BinCache) -> usize {
        lock(&cache.inner.index).pins.values().map(|&n| n as usize).sum()
    }

    #[tokio::test]
    async fn a_fetch_tells_of_its_file_before_the_check_and_the_file_is_not_executable_until_it_passed() {
        use std::os::unix::fs::PermissionsExt;
        for link in [false, true] {
            let s = setup();
            let cache = s.open(10 * SIZE);
            cache.link_local_files(link);
            let record = s.put("early", 1).await;
            let name = BinName::parse("early").unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let got = cache.get_early(&name, Some(tx)).await.unwrap();
            let early = rx.await.expect("told of the file");
            assert_eq!(early.path, got.path, "link {link}");
            // The file told of is the one now at the path, made executable
            // once checked (the failing case below checks it was not before).
            let told = nix::sys::stat::fstat(&early.file).unwrap();
            let placed = std::fs::metadata(&got.path).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!((told.st_dev, told.st_ino), (placed.dev(), placed.ino()), "link {link}");
            assert_eq!(placed.permissions().mode() & 0o777, CACHED_MODE, "link {link}");
            assert_eq!(record.digest, got.digest);
            // A hit tells of nothing.
            let (tx, rx) = tokio::sync::oneshot::channel();
            cache.get_early(&name, Some(tx)).await.unwrap();
            assert!(rx.await.is_err(), "a hit told of a file");
        }
        // A file that fails its check: told of, never placed, never
        // executable.
        let s = setup();
        let cache = s.open(10 * SIZE);
        let record = s.put("bad", 2).await;
        let object = s
            .dir
            .path()
            .join("store/bad")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("elf");
        let mut bytes = std::fs::read(&object).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&object, &bytes).unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let name = BinName::parse("bad").unwrap();
        assert!(
            cache.get_early(&name, Some(tx)).await.is_err(),
            "a corrupt object was accepted"
        );
        let early = rx.try_recv().expect("told of the copy before its check");
        let told = nix::sys::stat::fstat(&early.file).unwrap();
        assert_eq!(told.st_mode & 0o111, 0, "an unchecked file was executable");
        assert!(!cache.inner.path_of(&record.digest).exists());
    }

    #[tokio::test]
    async fn a_fill_past_the_bound_evicts_the_least_recently_used_file_which_a_get_fetches_again() {
        // Hard-linked files from the local store count like copies.
        for link in [false, true] {
            let s = setup();
            let (a, b, c) = (s.put("a", 1).await, s.put("b", 2).await, s.put("c", 3).await);
            let cache = s.open(BOUND);
            cache.link_local_files(link);
            drop(cache.get(&a.name).await.unwrap());
            drop(cache.get(&b.name).await.unwrap());
            // A hit is a use: b is now the least recently used.
            drop(cache.get(&a.name).await.unwrap());
            drop(cache.get(&c.name).await.unwrap());
            assert_eq!(s.files(), named(&[&a, &c]), "link {link}");
            let st = cache.stats();
            assert_eq!(
                (st.evicted, st.bytes, st.fetches),
                (1, 2 * SIZE, 3),
                "link {link}: {st:?}"
            );
            // b left the index and the memos: nothing hands out its path.
            assert_eq!(cache.lookup(&b.digest), None);
            assert!(cache.try_fresh(&b.name).is_none());

            let reads = s.reads();
            let got = cache.get(&b.name).await.unwrap();
            assert_eq!(std::fs::read(&got.path).unwrap(), elf(2), "link {link}");
            use std::os::unix::fs::MetadataExt;
            let links = std::fs::metadata(&got.path).unwrap().nlink();
            assert_eq!(links, if link { 2 } else { 1 }, "link {link}");
            assert_eq!(s.reads(), reads + 1, "link {link}: b is fetched again");
            // ... evicting a, now the least recently used.
            assert_eq!(s.files(), named(&[&b, &c]), "link {link}");
            assert_eq!(cache.stats().evicted, 2);
            drop(got);
            assert_eq!(pins_held(&cache), 0, "link {link}");
        }
    }

    #[tokio::test]
    async fn a_pinned_file_is_not_evicted_until_its_pin_is_dropped() {
        let s = setup();
        let (a, b, c, d) = (
            s.put("a", 1).await,
            s.put("b", 2).await,
            s.put("c", 3).await,
            s.put("d", 4).await,
        );
        let cache = s.open(BOUND);
        // a: the least recently used, but pinned.
        let held_a = cache.get(&a.name).await.unwrap();
        drop(cache.get(&b.name).await.unwrap());
        let held_c = cache.get(&c.name).await.unwrap();
        assert_eq!(s.files(), named(&[&a, &c]), "b went, not the pinned a");

        // Every file pinned: no room, refused with the sizes; nothing fetched.
        let reads = s.reads();
        let full = |e: BinError| match e {
            BinError::CacheFull { bytes, max, held, .. } => {
                assert_eq!((bytes, max, held), (SIZE, BOUND, 2 * SIZE));
                let text = e.to_string();
                assert!(
                    text.contains("d@latest") && text.contains("102400") && text.contains("256000"),
                    "{text}"
                );
            }
            e => panic!("not CacheFull: {e}"),
        };
        full(cache.get(&d.name).await.unwrap_err());
        // A clone is a pin of its own.
        let clone_a = held_a.clone();
        drop(held_a);
        full(cache.get(&d.name).await.unwrap_err());
        assert_eq!(s.reads(), reads);
        assert_eq!(s.files(), named(&[&a, &c]));

        drop(clone_a);
        let got_d = cache.get(&d.name).await.unwrap();
        assert_eq!(std::fs::read(&got_d.path).unwrap(), elf(4));
        assert_eq!(s.files(), named(&[&c, &d]), "a went once released");
        assert_eq!(std::fs::read(&held_c.path).unwrap(), elf(3));
        drop((held_c, got_d));
        assert_eq!(pins_held(&cache), 0);
    }

    #[tokio::test]
    async fn a_binary_larger_than_the_whole_bound_is_refused_naming_both_sizes() {
        let s = setup();
        let a = s.put("a", 1).await;
        let cache = s.open(50 * KIB);
        let e = cache.get(&a.name).await.unwrap_err();
        assert!(
            matches!(e, BinError::CacheTooSmall { bytes, max, .. } if bytes == SIZE && max == 50 * KIB),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("a@latest")
                && text.contains("102400")
                && text.contains("51200")
                && text.contains(&s.cache_dir.display().to_string())
                && text.contains("--bin-cache-mib"),
            "{text}"
        );
        assert_eq!(s.reads(), 0, "nothing was read");
        assert_eq!(s.files(), Vec::<String>::new());
        assert_eq!(cache.stats().fetches, 0);
    }

    #[tokio::test]
    async fn reopening_a_cache_over_its_bound_evicts_the_oldest_files_down_to_it() {
        let s = setup();
        let (a, b, c) = (s.put("a", 1).await, s.put("b", 2).await, s.put("c", 3).await);
        let cache = s.open(BIN_CACHE_BYTES_DEFAULT);
        for r in [&a, &b, &c] {
            drop(cache.get(&r.name).await.unwrap());
        }
        drop(cache);
        // Oldest first: b, c, a (by the later of atime and mtime).
        let now = std::time::SystemTime::now();
        for (r, hours_ago) in [(&b, 3), (&c, 2), (&a, 1)] {
            let t = now - Duration::from_secs(hours_ago * 3600);
            let f = File::open(s.cache_dir.join(r.digest.to_string())).unwrap();
            f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                .unwrap();
        }
        // Within the bound: nothing goes.
        let cache = s.open(3 * SIZE);
        assert_eq!((cache.stats().evicted, cache.stats().bytes), (0, 3 * SIZE));
        drop(cache);

        let cache = s.open(BOUND);
        assert_eq!(s.files(), named(&[&a, &c]), "the oldest, b, went");
        let st = cache.stats();
        assert_eq!((st.evicted, st.bytes), (1, 2 * SIZE), "{st:?}");
        // What is left counts: a hit (a, re-hashed) reads no object, and
        // the next fill evicts the least recently used survivor, c.
        let reads = s.reads();
        drop(cache.get(&a.name).await.unwrap());
        assert_eq!((s.reads(), cache.stats().verifications), (reads, 1));
        drop(cache.get(&b.name).await.unwrap());
        assert_eq!(s.reads(), reads + 1);
        assert_eq!(s.files(), named(&[&a, &b]));
        assert_eq!(cache.stats().bytes, 2 * SIZE);
    }

    #[tokio::test]
    async fn concurrent_gets_of_one_name_fetch_it_once_and_evict_once() {
        let s = setup();
        let (a, b, c) = (s.put("a", 1).await, s.put("b", 2).await, s.put("c", 3).await);
        let cache = s.open(BOUND);
        drop(cache.get(&a.name).await.unwrap());
        drop(cache.get(&b.name).await.unwrap());
        let reads = s.reads();
        let gets = (0..16).map(|_| cache.get(&c.name));
        let got: Vec<CachedBin> = futures::future::join_all(gets)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for g in &got {
            assert_eq!(std::fs::read(&g.path).unwrap(), elf(3));
        }
        assert_eq!(s.reads(), reads + 1, "one fetch");
        let st = cache.stats();
        assert_eq!((st.fetches, st.joined, st.evicted), (3, 15, 1), "{st:?}");
        assert_eq!(s.files(), named(&[&b, &c]));
        assert_eq!(pins_held(&cache), 16, "one pin per caller, none left by the fetch");
        // c held by all sixteen: the next fill evicts b, and the one after
        // a, though c is the least recently used.
        drop(cache.get(&a.name).await.unwrap());
        assert_eq!(s.files(), named(&[&a, &c]));
        drop(cache.get(&b.name).await.unwrap());
        assert_eq!(s.files(), named(&[&b, &c]));
        drop(got);
        assert_eq!(pins_held(&cache), 0);
    }
}
