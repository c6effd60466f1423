//! sigmad's content-addressed binary cache: one file per digest, filled
//! from the registry at most once per binary however many spawns ask at
//! once.

use super::digest::{Digest, Hasher};
use super::elf;
use super::error::{because, BinError};
use super::io::CacheIo;
#[cfg(doc)]
use super::limits::RECORD_TTL_DEFAULT;
use super::limits::{
    BIN_BYTES_MAX, CACHE_WRITES_IN_FLIGHT_MAX, CACHE_WRITE_BYTES, ELF_HEADERS_BYTES_MAX, RECORD_MEMOS_MAX,
};
use super::name::BinName;
use super::registry::{BinRegistry, ObjectBody, Record};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Permissions of a cached binary: read and execute, never written again.
const CACHED_MODE: u32 = 0o555;
/// Names of files being filled start with this; they are never exec'd.
const TEMP_PREFIX: &str = ".fill.";

/// A binary in the cache, ready to exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBin {
    /// The name it was asked for.
    pub name: BinName,
    /// Its digest: the cache file's name.
    pub digest: Digest,
    /// Its size.
    pub bytes: u64,
    /// The cache file.
    pub path: PathBuf,
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
}

#[derive(Debug, Default)]
struct Counters {
    gets: AtomicU64,
    hits: AtomicU64,
    joined: AtomicU64,
    fetches: AtomicU64,
    verifications: AtomicU64,
    corrupt_removed: AtomicU64,
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
    /// Digests whose cache file this process has hashed (or written).
    verified: Mutex<HashSet<Digest>>,
    temp_seq: AtomicU64,
    counters: Counters,
    /// Whether a local store's file goes in as a hard link (`link_in`)
    /// rather than a copy.
    link_local: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while holding one: every
    // critical section is a single insert, remove or lookup.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BinCache {
    /// A cache in `dir` (made if missing) filled from `registry`, its file
    /// IO done by `io`, reusing a record for `record_ttl` before asking the
    /// store again (zero: ask on every get; [`RECORD_TTL_DEFAULT`] is the
    /// default). Leftovers of fills a crash interrupted are removed.
    pub fn open(
        dir: impl AsRef<Path>,
        registry: BinRegistry,
        io: Arc<dyn CacheIo>,
        record_ttl: Duration,
    ) -> Result<BinCache, BinError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| BinError::io("create directory", &dir, e))?;
        let entries = std::fs::read_dir(&dir).map_err(|e| BinError::io("read directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| BinError::io("read directory", &dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| BinError::io("remove leftover", &path, e))?;
            }
        }
        Ok(BinCache {
            inner: Arc::new(Inner {
                registry,
                dir,
                io,
                record_ttl,
                flights: Mutex::default(),
                memos: Mutex::default(),
                verified: Mutex::default(),
                temp_seq: AtomicU64::new(0),
                counters: Counters::default(),
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
        }
    }

    /// The cache file of `digest`, if this process has it verified.
    pub fn lookup(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.inner.path_of(digest);
        (lock(&self.inner.verified).contains(digest) && path.exists()).then_some(path)
    }

    /// A warm hit without waiting: `name`'s memo is fresh (within the record
    /// TTL) and its file was verified and is still there. Runs where the
    /// caller runs (no runtime needed): a lock and a stat.
    pub fn try_fresh(&self, name: &BinName) -> Option<CachedBin> {
        let hit = self.inner.fresh_hit(name)?;
        self.inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// The binary `name`, in the cache: from the cache if it is there,
    /// else fetched once, however many ask at once (they all get the one
    /// fetch's outcome). Must run inside a tokio runtime.
    pub async fn get(&self, name: &BinName) -> Result<CachedBin, BinError> {
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
                        let result = this.resolve(&name).await;
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
    /// file this process has verified.
    fn fresh_hit(&self, name: &BinName) -> Option<CachedBin> {
        let record = self.fresh_record(name)?;
        if !lock(&self.verified).contains(&record.digest) {
            return None;
        }
        let path = self.path_of(&record.digest);
        path.exists().then(|| CachedBin {
            name: name.clone(),
            digest: record.digest,
            bytes: record.bytes,
            path,
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
    async fn resolve(&self, name: &BinName) -> Result<CachedBin, BinError> {
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
        let cached = CachedBin {
            name: name.clone(),
            digest: record.digest,
            bytes: record.bytes,
            path: path.clone(),
        };
        if path.exists() {
            let verified = lock(&self.verified).contains(&record.digest);
            if verified || self.verify(&path, &record).await? {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(cached);
            }
        }
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        self.fill(&record, &path).await?;
        lock(&self.verified).insert(record.digest);
        Ok(cached)
    }

    /// Re-hashes a cache file this process has not verified yet (one left
    /// by an earlier run). A file that does not match is removed: false.
    async fn verify(&self, path: &Path, record: &Record) -> Result<bool, BinError> {
        self.counters.verifications.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(File::open(path).map_err(|e| BinError::io("open", path, e))?);
        let len = file.metadata().map_err(|e| BinError::io("stat", path, e))?.len();
        let mut matches = len == record.bytes;
        if matches {
            let mut hasher = Hasher::new();
            let mut at = 0u64;
            while at < len {
                let want = (len - at).min(CACHE_WRITE_BYTES as u64) as usize;
                let chunk = self
                    .io
                    .read_at(file.clone(), at, want)
                    .await
                    .map_err(|e| BinError::io("read", path, e))?;
                if chunk.is_empty() {
                    break;
                }
                hasher.update(&chunk);
                at += chunk.len() as u64;
            }
            matches = at == len && hasher.finish() == record.digest;
        }
        if matches {
            lock(&self.verified).insert(record.digest);
            return Ok(true);
        }
        self.counters.corrupt_removed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), name = %record.name, "cached binary does not match its digest; removed, fetching again");
        std::fs::remove_file(path).map_err(|e| BinError::io("remove corrupt", path, e))?;
        Ok(false)
    }

    /// Fetches `record`'s object into a temporary file, hashing and
    /// checking it as it streams, and renames it to `path` only if it is
    /// whole, a static executable and of the recorded digest.
    async fn fill(&self, record: &Record, path: &Path) -> Result<(), BinError> {
        let body = self.registry.open_object(record).await?;
        if let (true, ObjectBody::File(_, source_path)) = (self.link_local.load(Ordering::Relaxed), &body) {
            if self.link_in(record, path, source_path).await? {
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
            .mode(CACHED_MODE)
            .open(&temp)
            .map_err(|e| BinError::io("create", &temp, e))?;
        let file = Arc::new(file);
        let mut fill = Fill::new(self, record, file.clone(), &temp);
        match body {
            ObjectBody::File(source, source_path) => {
                self.read_through(Arc::new(source), &source_path, record, &mut fill)
                    .await?;
            }
            ObjectBody::Stream(mut stream) => loop {
                let next = tokio::time::timeout(self.registry.deadline(), stream.next())
                    .await
                    .map_err(|_| {
                        self.registry
                            .unreachable("fetch", &record.name.to_string(), "no answer".into())
                    })?;
                match next {
                    None => break,
                    Some(Ok(chunk)) => fill.take(chunk, false).await?,
                    Some(Err(e)) => return Err(self.registry.fetch_error(&record.name, Arc::new(e))),
                }
            },
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
        Self::place(guard, &temp, path, false).await
    }

    /// Renames the checked file `from` (kept by `guard` until then) to
    /// `path`, made read-only and executable first if `chmod` (a hard
    /// link keeps its source's mode); on tokio's blocking pool.
    async fn place(guard: TempGuard, from: &Path, path: &Path, chmod: bool) -> Result<(), BinError> {
        let (from, to) = (from.to_path_buf(), path.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<(), BinError> {
            if chmod {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&from, std::fs::Permissions::from_mode(CACHED_MODE))
                    .map_err(|e| BinError::io("chmod", &from, e))?;
            }
            std::fs::rename(&from, &to).map_err(|e| BinError::io("rename into place", &to, e))
        })
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
    async fn link_in(&self, record: &Record, path: &Path, source_path: &Path) -> Result<bool, BinError> {
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
        let mut fill = Fill::new(self, record, file.clone(), &link);
        fill.verify_only = true;
        self.read_through(file.clone(), source_path, record, &mut fill).await?;
        fill.finish().await?;
        drop(fill);
        drop(file);
        Self::place(guard, &link, path, true).await?;
        Ok(true)
    }
}

/// Removes a temporary file unless kept: whatever ends a fill early leaves
/// nothing in the cache directory.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a partial cache file");
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
    /// Checking a file that is already in place (a hard link of a local
    /// store's file): hash and check, write nothing.
    verify_only: bool,
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
            verify_only: false,
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
        if self.verify_only {
            return Ok(());
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
        if let Some(head) = self.head.take() {
            elf::check_headers(&head).map_err(|why| BinError::NotStaticElf {
                name: self.record.name.to_string(),
                why,
            })?;
        }
        Ok(())
    }

    fn size_mismatch(&self) -> BinError {
        BinError::SizeMismatch {
            name: self.record.name.to_string(),
            store: self.inner.registry.store_name().to_owned(),
            expected: self.record.bytes,
            got: self.received,
        }
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
        let got = self.hasher.finish();
        if got != self.record.digest {
            return Err(BinError::DigestMismatch {
                name: self.record.name.to_string(),
                store: self.inner.registry.store_name().to_owned(),
                expected: self.record.digest.to_string(),
                got: got.to_string(),
            });
        }
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
