//! The binary registry: binaries and their records in an object store.
//!
//! Layout under the store's prefix, one directory per binary and version:
//!
//! ```text
//! NAME/VERSION/elf           the executable's bytes
//! NAME/VERSION/record.json   {"format":1,"name":..,"version":..,"bytes":..,"blake3":..}
//! ```
//!
//! A put writes the object, then the record; a remove deletes the record,
//! then the object: the record is what makes a binary exist, and it is
//! written only after the bytes it describes. Two puts of one name racing
//! each other may leave the record of one beside the object of the other
//! (object stores have no multi-object transaction, and conditional puts
//! are not available everywhere); a fetch then fails with a digest (or
//! size) mismatch and caches nothing, and the next put repairs it. No
//! fetch ever runs bytes other than those a put checked and recorded.
//!
//! Every store call has a deadline ([`StoreConfig::reply_deadline`]): a
//! store that does not answer is an error
//! ([`BinError::StoreUnreachable`]) within it, not a hang.

use super::digest::Digest;
use super::elf;
use super::error::{because, BinError, Cause};
use super::limits::{
    BIN_BYTES_MAX, HASH_PIECE_BYTES, LIST_ENTRIES_MAX, LIST_READS_IN_FLIGHT_MAX, OBJECT_PARTS_IN_FLIGHT,
    OBJECT_PART_BYTES, RECORD_BYTES_MAX, STORE_REPLY_DEFAULT, STORE_REPLY_MAX, STORE_UPLOAD_BYTES_PER_S_MIN,
};
use super::name::BinName;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const OBJECT_FILE: &str = "elf";
const RECORD_FILE: &str = "record.json";
const RECORD_FORMAT: u64 = 1;

/// Where the binaries live and how to reach them.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `s3://BUCKET[/PREFIX]`, or a local directory (`/abs/dir` or
    /// `file:///abs/dir`).
    pub url: String,
    /// S3: the endpoint (`http://127.0.0.1:9000`); AWS's when unset.
    pub endpoint: Option<String>,
    /// S3: the access key id; from `AWS_ACCESS_KEY_ID` when unset.
    pub access_key_id: Option<String>,
    /// S3: the secret key; from `AWS_SECRET_ACCESS_KEY` when unset.
    pub secret_access_key: Option<String>,
    /// S3: the region; `us-east-1` when unset and not in the environment.
    pub region: Option<String>,
    /// S3: allow `http://` endpoints (a test or a private network).
    pub allow_http: bool,
    /// How long one store call may wait for an answer, or for the next
    /// chunk of a fetch.
    pub reply_deadline: Duration,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<hidden>"),
            )
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("reply_deadline", &self.reply_deadline)
            .finish()
    }
}

impl StoreConfig {
    /// A local directory store.
    pub fn local(dir: impl AsRef<Path>) -> StoreConfig {
        StoreConfig::url(dir.as_ref().display().to_string())
    }

    /// The default: a directory under sigmad's data directory.
    pub fn local_default(data_dir: impl AsRef<Path>) -> StoreConfig {
        StoreConfig::local(data_dir.as_ref().join("bins").join("store"))
    }

    /// A store at `url` with default options.
    pub fn url(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            region: None,
            allow_http: false,
            reply_deadline: STORE_REPLY_DEFAULT,
        }
    }
}

/// Counters of store calls, for tests and diagnostics.
#[derive(Debug, Default)]
struct Counters {
    object_reads: AtomicU64,
    object_range_reads: AtomicU64,
    object_bytes_read: AtomicU64,
    record_reads: AtomicU64,
}

/// What the registry has asked of its store so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Object (binary) reads started.
    pub object_reads: u64,
    /// Ranged GETs of those reads after their first part (a remote
    /// object past `OBJECT_PART_BYTES`).
    pub object_range_reads: u64,
    /// Bytes of objects received.
    pub object_bytes_read: u64,
    /// Record reads started (stat, list, and a fetch's record look-up).
    pub record_reads: u64,
}

/// A binary's record: what a put checked and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The binary.
    pub name: BinName,
    /// Its size.
    pub bytes: u64,
    /// Its BLAKE3 digest.
    pub digest: Digest,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordJson {
    format: u64,
    name: String,
    version: String,
    bytes: u64,
    blake3: String,
}

impl Record {
    fn to_json(&self) -> Vec<u8> {
        let json = RecordJson {
            format: RECORD_FORMAT,
            name: self.name.name().to_owned(),
            version: self.name.version().to_owned(),
            bytes: self.bytes,
            blake3: self.digest.to_string(),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(&json).expect("a record serializes")
    }

    /// Parses a record read from the store for `name`: untrusted bytes.
    fn from_json(name: &BinName, bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(format!("record of {} bytes, at most {RECORD_BYTES_MAX}", bytes.len()));
        }
        let json: RecordJson = serde_json::from_slice(bytes).map_err(|e| format!("record does not parse: {e}"))?;
        if json.format != RECORD_FORMAT {
            return Err(format!("record format {} is not {RECORD_FORMAT}", json.format));
        }
        if json.name != name.name() || json.version != name.version() {
            return Err(format!("record names {}@{}", json.name, json.version));
        }
        let digest = Digest::parse_hex(&json.blake3).ok_or("record's blake3 is not 64 hex digits")?;
        Ok(Record {
            name: name.clone(),
            bytes: json.bytes,
            digest,
        })
    }
}

/// The binaries of one object store: put, list, remove, stat, and the
/// object reads of the cache.
#[derive(Clone)]
pub struct BinRegistry {
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// The store as named in errors (its URL).
    describe: Arc<str>,
    deadline: Duration,
    counters: Arc<Counters>,
    /// Whether objects come over the network (S3): a large one is then
    /// read as parallel ranged GETs.
    remote: bool,
}

impl std::fmt::Debug for BinRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinRegistry")
            .field("store", &self.describe)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// An object opened for reading: a local file the cache reads itself, or
/// a stream of chunks from a remote store.
pub(crate) enum ObjectBody {
    /// A local store's file (read by the cache's IO, not in 8 KiB steps).
    File(std::fs::File, PathBuf),
    /// A remote store's response body.
    Stream(futures::stream::BoxStream<'static, object_store::Result<Bytes>>),
    /// A remote store's object as ranged GETs of [`OBJECT_PART_BYTES`]
    /// (the last one shorter), cut into pieces as they come
    /// ([`PieceStream`]).
    Parts(PieceStream),
}

/// A remote object's pieces of [`HASH_PIECE_BYTES`] (the last one
/// shorter) as they come from its ranged parts, not in order: each piece's
/// offset and its chunks.
pub(crate) type PieceStream = futures::stream::BoxStream<'static, Result<(u64, Vec<Bytes>), BinError>>;

/// What one ranged GET of [`BinRegistry::object_parts`] needs.
#[derive(Clone)]
struct PartContext {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    record: Record,
    describe: String,
    deadline: Duration,
    counters: Arc<Counters>,
}

impl PartContext {
    /// A store error of this part's GET as the fetch's error: a missing
    /// object is `NotFound`, a failure to connect the store unreachable.
    fn failed(&self, e: object_store::Error) -> BinError {
        let name = self.record.name.to_string();
        match e {
            object_store::Error::NotFound { .. } => BinError::NotFound {
                name,
                store: self.describe.clone(),
            },
            e if is_connect_failure(&e) => BinError::StoreUnreachable {
                op: "fetch",
                name,
                store: self.describe.clone(),
                deadline: self.deadline,
                why: e.to_string(),
            },
            e => BinError::Fetch {
                name,
                store: self.describe.clone(),
                source: Arc::new(e),
            },
        }
    }

    /// The part at `at`, as [`HASH_PIECE_BYTES`] pieces as they come: the
    /// GET's answer (the object as long as the record says), then its body
    /// cut at piece boundaries (chunks kept, split only where a boundary
    /// falls inside one). A body that ends early yields its short piece
    /// last (the caller refuses its length).
    fn pieces(self, at: u64) -> PieceStream {
        let end = (at + OBJECT_PART_BYTES).min(self.record.bytes);
        let opened = async move {
            if at > 0 {
                self.counters.object_range_reads.fetch_add(1, Ordering::Relaxed);
            }
            let range = object_store::GetOptions {
                range: Some((at..end).into()),
                ..Default::default()
            };
            let got = self
                .store
                .get_opts(&self.path, range)
                .await
                .map_err(|e| self.failed(e))?;
            if got.meta.size != self.record.bytes {
                return Err(size_mismatch(&self.record, &self.describe, got.meta.size));
            }
            Ok((self, got.into_stream()))
        };
        futures::stream::once(opened)
            .flat_map(move |opened| match opened {
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                Ok((this, body)) => cut_pieces(this, body, at, end),
            })
            .boxed()
    }
}

/// `record`'s object is `got` bytes long in `store`, not as its record says.
pub(crate) fn size_mismatch(record: &Record, store: &str, got: u64) -> BinError {
    BinError::SizeMismatch {
        name: record.name.to_string(),
        store: store.to_owned(),
        expected: record.bytes,
        got,
    }
}

/// What [`cut_pieces`] carries from one piece to the next.
struct Cutting {
    this: PartContext,
    body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    /// The next piece's offset, and the part's end.
    next: u64,
    end: u64,
    /// A chunk's bytes past the last piece's end.
    carry: Option<Bytes>,
    done: bool,
}

/// `body` (the bytes of `at..end`) as pieces of [`HASH_PIECE_BYTES`]
/// (pieces start at multiples of it; `at` is one).
fn cut_pieces(
    this: PartContext,
    body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    at: u64,
    end: u64,
) -> PieceStream {
    let state = Cutting {
        this,
        body,
        next: at,
        end,
        carry: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done || st.next >= st.end {
            return None;
        }
        let want = (st.end - st.next).min(HASH_PIECE_BYTES);
        let (mut chunks, mut got) = (Vec::new(), 0u64);
        while got < want {
            let mut chunk = match st.carry.take() {
                Some(c) => c,
                None => match st.body.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(st.this.failed(e)), st));
                    }
                    // Short: the caller refuses the piece's length.
                    None => {
                        st.done = true;
                        break;
                    }
                },
            };
            let need = want - got;
            if chunk.len() as u64 > need {
                st.carry = Some(chunk.split_off(need as usize));
            }
            got += chunk.len() as u64;
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
        }
        if got == 0 {
            return None;
        }
        let offset = st.next;
        st.next += got;
        Some((Ok((offset, chunks)), st))
    })
    .boxed()
}

impl BinRegistry {
    /// Opens the store `config` names. S3 needs a tokio runtime to run
    /// calls on, not to be built.
    pub fn open(config: &StoreConfig) -> Result<BinRegistry, BinError> {
        let bad = |why: String| BinError::Config {
            store: config.url.clone(),
            why,
        };
        if config.reply_deadline.is_zero() || config.reply_deadline > STORE_REPLY_MAX {
            return Err(bad(format!(
                "reply deadline {:?} is not within (0, {STORE_REPLY_MAX:?}] (STORE_REPLY_MAX)",
                config.reply_deadline
            )));
        }
        let remote = config.url.starts_with("s3://");
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if let Some(rest) = config.url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket after s3://".into()));
            }
            (
                Arc::new(s3(config, bucket).map_err(|e| bad(e.to_string()))?),
                prefix.trim_matches('/').to_owned(),
            )
        } else {
            let dir = config.url.strip_prefix("file://").unwrap_or(&config.url);
            let dir = Path::new(dir);
            if !dir.is_absolute() {
                return Err(bad(
                    "a local store must be an absolute directory (or s3://BUCKET)".into()
                ));
            }
            std::fs::create_dir_all(dir).map_err(|e| bad(format!("create directory: {e}")))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
            (Arc::new(local), String::new())
        };
        let prefix = ObjPath::parse(&prefix).map_err(|e| bad(format!("prefix: {e}")))?;
        Ok(BinRegistry {
            store,
            prefix,
            describe: config.url.clone().into(),
            deadline: config.reply_deadline,
            counters: Arc::default(),
            remote,
        })
    }

    /// The store, as its URL.
    pub fn store_name(&self) -> &str {
        &self.describe
    }

    /// The reply deadline of each store call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// What has been asked of the store so far.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            object_reads: self.counters.object_reads.load(Ordering::Relaxed),
            object_range_reads: self.counters.object_range_reads.load(Ordering::Relaxed),
            object_bytes_read: self.counters.object_bytes_read.load(Ordering::Relaxed),
            record_reads: self.counters.record_reads.load(Ordering::Relaxed),
        }
    }

    fn object_path(&self, name: &BinName) -> ObjPath {
        self.prefix
            .clone()
            .join(name.name())
            .join(name.version())
            .join(OBJECT_FILE)
    }

    fn record_path(&self, name: &BinName) -> ObjPath {
        self.prefix
            .clone()
            .join(name.name())
            .join(name.version())
            .join(RECORD_FILE)
    }

    /// Runs a store call within the deadline. A call that gets no answer
    /// in time, or fails to connect (after the client's retries, which the
    /// deadline bounds too), is [`BinError::StoreUnreachable`]; any other
    /// outcome is the caller's to map.
    async fn within<T>(
        &self,
        op: &'static str,
        name: &str,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>, BinError> {
        self.within_for(self.deadline, op, name, call).await
    }

    /// [`Self::within`] with a longer deadline: an upload's.
    async fn within_for<T>(
        &self,
        deadline: Duration,
        op: &'static str,
        name: &str,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>, BinError> {
        let unreachable = |why: String| BinError::StoreUnreachable {
            op,
            name: name.to_owned(),
            store: self.describe.to_string(),
            deadline,
            why,
        };
        match tokio::time::timeout(deadline, call).await {
            Err(_) => Err(unreachable("no answer".into())),
            Ok(Err(e)) if is_connect_failure(&e) => Err(unreachable(e.to_string())),
            Ok(result) => Ok(result),
        }
    }

    /// The store unreachable for `op` on `name`.
    pub(crate) fn unreachable(&self, op: &'static str, name: &str, why: String) -> BinError {
        BinError::StoreUnreachable {
            op,
            name: name.to_owned(),
            store: self.describe.to_string(),
            deadline: self.deadline,
            why,
        }
    }

    /// Puts `bytes` as `name`, replacing what was there, after checking it
    /// is a static executable within the size limit. Returns its record.
    pub async fn put(&self, name: &BinName, bytes: Bytes) -> Result<Record, BinError> {
        let shown = name.to_string();
        if bytes.len() as u64 > BIN_BYTES_MAX {
            return Err(BinError::TooLarge {
                name: shown,
                bytes: bytes.len() as u64,
                limit: BIN_BYTES_MAX,
            });
        }
        elf::check_file(&bytes).map_err(|why| BinError::NotStaticElf {
            name: shown.clone(),
            why,
        })?;
        let record = Record {
            name: name.clone(),
            bytes: bytes.len() as u64,
            digest: Digest::of(&bytes),
        };
        let put_err = |e: object_store::Error| BinError::Put {
            name: shown.clone(),
            store: self.describe.to_string(),
            source: Arc::new(e),
        };
        let object = self.object_path(name);
        // An upload is one call: its deadline grows with its size, at the
        // slowest rate a store is expected to take bytes.
        let upload_ms = bytes.len() as u64 * 1000 / STORE_UPLOAD_BYTES_PER_S_MIN;
        let upload_deadline = self.deadline + Duration::from_millis(upload_ms);
        self.within_for(
            upload_deadline,
            "put",
            &shown,
            self.store.put(&object, PutPayload::from_bytes(bytes)),
        )
        .await?
        .map_err(put_err)?;
        let json = Bytes::from(record.to_json());
        self.within(
            "put",
            &shown,
            self.store.put(&self.record_path(name), PutPayload::from_bytes(json)),
        )
        .await?
        .map_err(put_err)?;
        Ok(record)
    }

    /// Puts the file at `path` as `name`; a file over the limit is refused
    /// before it is read.
    pub async fn put_file(&self, name: &BinName, path: &Path) -> Result<Record, BinError> {
        let path_buf = path.to_path_buf();
        let limit = BIN_BYTES_MAX;
        let shown = name.to_string();
        let read = tokio::task::spawn_blocking(move || -> Result<Bytes, BinError> {
            let meta = std::fs::metadata(&path_buf).map_err(|e| BinError::io("stat", &path_buf, e))?;
            if meta.len() > limit {
                return Err(BinError::TooLarge {
                    name: shown,
                    bytes: meta.len(),
                    limit,
                });
            }
            let bytes = std::fs::read(&path_buf).map_err(|e| BinError::io("read", &path_buf, e))?;
            if bytes.len() as u64 > limit {
                return Err(BinError::TooLarge {
                    name: shown,
                    bytes: bytes.len() as u64,
                    limit,
                });
            }
            Ok(Bytes::from(bytes))
        })
        .await
        .map_err(|e| BinError::io("read", path, std::io::Error::other(e.to_string())))??;
        self.put(name, read).await
    }

    /// The record of `name`.
    pub async fn stat(&self, name: &BinName) -> Result<Record, BinError> {
        let shown = name.to_string();
        let stat_err = |source: Cause| BinError::Stat {
            name: shown.clone(),
            store: self.describe.to_string(),
            source,
        };
        self.counters.record_reads.fetch_add(1, Ordering::Relaxed);
        let path = self.record_path(name);
        let got = match self.within("stat", &shown, self.store.get(&path)).await? {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(self.not_found(name)),
            Err(e) => return Err(stat_err(Arc::new(e))),
        };
        if got.meta.size > RECORD_BYTES_MAX as u64 {
            return Err(stat_err(because(format!(
                "record of {} bytes, at most {RECORD_BYTES_MAX} (RECORD_BYTES_MAX)",
                got.meta.size
            ))));
        }
        let bytes = self
            .within("stat", &shown, got.bytes())
            .await?
            .map_err(|e| stat_err(Arc::new(e)))?;
        Record::from_json(name, &bytes).map_err(|why| stat_err(because(why)))
    }

    fn not_found(&self, name: &BinName) -> BinError {
        BinError::NotFound {
            name: name.to_string(),
            store: self.describe.to_string(),
        }
    }

    /// Every binary's record, sorted by name and version (at most
    /// [`LIST_ENTRIES_MAX`]).
    pub async fn list(&self) -> Result<Vec<Record>, BinError> {
        let list_err = |source: Cause| BinError::List {
            store: self.describe.to_string(),
            source,
        };
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut listing = self.store.list(prefix);
        let mut names = Vec::new();
        loop {
            let next = tokio::time::timeout(self.deadline, listing.next())
                .await
                .map_err(|_| self.unreachable("list", "*", "no answer".into()))?;
            let Some(meta) = next else { break };
            let meta = meta.map_err(|e| match is_connect_failure(&e) {
                true => self.unreachable("list", "*", e.to_string()),
                false => list_err(Arc::new(e)),
            })?;
            // PREFIX/NAME/VERSION/record.json; anything else is not ours.
            let Some(parts) = meta.location.prefix_match(&self.prefix) else {
                continue;
            };
            let parts: Vec<_> = parts.collect();
            if parts.len() != 3 || parts[2].as_ref() != RECORD_FILE {
                continue;
            }
            let Ok(name) = BinName::parse(&format!("{}@{}", parts[0].as_ref(), parts[1].as_ref())) else {
                continue;
            };
            if names.len() == LIST_ENTRIES_MAX {
                return Err(list_err(because(format!(
                    "more than {LIST_ENTRIES_MAX} binaries (LIST_ENTRIES_MAX)"
                ))));
            }
            names.push(name);
        }
        let records: Vec<Option<Record>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.stat(&name).await {
                    Ok(record) => Ok(Some(record)),
                    // Removed since it was listed.
                    Err(BinError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(LIST_READS_IN_FLIGHT_MAX)
            .try_collect()
            .await?;
        let mut records: Vec<Record> = records.into_iter().flatten().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Removes `name`: its record, then its object.
    pub async fn remove(&self, name: &BinName) -> Result<(), BinError> {
        let shown = name.to_string();
        let remove_err = |e: object_store::Error| BinError::Remove {
            name: shown.clone(),
            store: self.describe.to_string(),
            source: Arc::new(e),
        };
        // S3 answers a delete of nothing with success; ask first, so that
        // removing what is not there says so on every store.
        match self
            .within("remove", &shown, self.store.head(&self.record_path(name)))
            .await?
        {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Err(self.not_found(name)),
            Err(e) => return Err(remove_err(e)),
        }
        for path in [self.record_path(name), self.object_path(name)] {
            match self.within("remove", &shown, self.store.delete(&path)).await? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remove_err(e)),
            }
        }
        Ok(())
    }

    /// Opens `record`'s object for reading; its size must be the record's.
    /// From a remote store, an object past [`OBJECT_PART_BYTES`] comes as
    /// ranged GETs, [`OBJECT_PARTS_IN_FLIGHT`] at once from the start, cut
    /// into pieces yielded as they come ([`BinRegistry::object_parts`]). (Chaining the others after the first part's body, as before,
    /// left one GET in flight for the first part: cold-start-s3 57-65 ms
    /// then, 33-36 ms with all in flight, quick runs alternated; asking for
    /// the others only once the first part's answer had come cost one more
    /// round trip to the server.)
    pub(crate) async fn open_object(&self, record: &Record) -> Result<ObjectBody, BinError> {
        let name = &record.name;
        let shown = name.to_string();
        self.counters.object_reads.fetch_add(1, Ordering::Relaxed);
        let path = self.object_path(name);
        if self.remote && record.bytes > OBJECT_PART_BYTES {
            return Ok(ObjectBody::Parts(self.object_parts(record, path)));
        }
        let got = match self
            .within("fetch", &shown, self.store.get_opts(&path, Default::default()))
            .await?
        {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(self.not_found(name)),
            Err(e) => return Err(self.fetch_error(name, Arc::new(e))),
        };
        if got.meta.size != record.bytes {
            return Err(size_mismatch(record, self.describe.as_ref(), got.meta.size));
        }
        Ok(match got.payload {
            object_store::GetResultPayload::File(file, path) => ObjectBody::File(file, path),
            object_store::GetResultPayload::Stream(stream) => ObjectBody::Stream(stream),
        })
    }

    /// `record`'s object at `path` as ranged GETs of [`OBJECT_PART_BYTES`],
    /// all asked for from the start, [`OBJECT_PARTS_IN_FLIGHT`] at once,
    /// cut into [`HASH_PIECE_BYTES`] pieces yielded as they come, from
    /// whichever part (each piece is a BLAKE3 subtree of its own, hashed
    /// while the rest of the object comes). Each part checks that the
    /// object is as long as the record says and maps its own errors; the
    /// caller bounds the wait for each piece and puts them in order.
    fn object_parts(&self, record: &Record, path: object_store::path::Path) -> PieceStream {
        let this = PartContext {
            store: self.store.clone(),
            path,
            record: record.clone(),
            describe: self.describe.to_string(),
            deadline: self.deadline,
            counters: self.counters.clone(),
        };
        futures::stream::iter((0..record.bytes).step_by(OBJECT_PART_BYTES as usize))
            .map(move |at| this.clone().pieces(at))
            .flatten_unordered(OBJECT_PARTS_IN_FLIGHT)
            .boxed()
    }

    /// Counts bytes received from the store.
    pub(crate) fn count_bytes_read(&self, bytes: u64) {
        self.counters.object_bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A fetch's store error.
    pub(crate) fn fetch_error(&self, name: &BinName, source: Cause) -> BinError {
        BinError::Fetch {
            name: name.to_string(),
            store: self.describe.to_string(),
            source,
        }
    }
}

/// Whether a store error is a failure to connect or a transport timeout
/// (the store unreachable), rather than an answer.
fn is_connect_failure(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(http) = c.downcast_ref::<HttpError>() {
            return matches!(http.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout);
        }
        cause = c.source();
    }
    false
}

/// An S3 store: path-style requests, retries bounded by the deadline.
fn s3(config: &StoreConfig, bucket: &str) -> object_store::Result<object_store::aws::AmazonS3> {
    use object_store::aws::AmazonS3Builder;
    use object_store::{BackoffConfig, ClientOptions, RetryConfig};
    // reqwest is built with rustls but no bundled provider (see the root
    // Cargo.toml): ring is installed as the process's provider unless the
    // process chose one already, in which case that one serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(key) = &config.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &config.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    let region = config.region.clone().or_else(|| std::env::var("AWS_REGION").ok());
    builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
    let client = ClientOptions::new()
        .with_allow_http(config.allow_http)
        .with_connect_timeout(config.reply_deadline)
        // A whole body may take longer than one reply; the cache bounds
        // the wait for each chunk instead.
        .with_timeout_disabled();
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(20),
            max_backoff: config.reply_deadline / 4,
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: config.reply_deadline,
    };
    builder.with_client_options(client).with_retry(retry).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(bytes: u64) -> PartContext {
        PartContext {
            store: Arc::new(object_store::memory::InMemory::new()),
            path: ObjPath::from("x"),
            record: Record {
                name: BinName::parse("cut@v1").unwrap(),
                bytes,
                digest: Digest::of(b""),
            },
            describe: "memory".into(),
            deadline: Duration::from_secs(1),
            counters: Arc::default(),
        }
    }

    /// Cuts `at..at + total` bytes, arriving as chunks of `sizes` (cycled), into pieces; the
    /// pieces' offsets, lengths and bytes.
    fn cut(at: u64, total: u64, sizes: &[usize], end: u64) -> Vec<Result<(u64, Vec<u8>), String>> {
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        let mut chunks = Vec::new();
        let (mut i, mut k) = (0usize, 0usize);
        while i < data.len() {
            let n = sizes[k % sizes.len()].min(data.len() - i);
            chunks.push(Ok(Bytes::copy_from_slice(&data[i..i + n])));
            i += n;
            k += 1;
        }
        let body = futures::stream::iter(chunks).boxed();
        let pieces = cut_pieces(context(end), body, at, end);
        futures::executor::block_on(pieces.collect::<Vec<_>>())
            .into_iter()
            .map(|r| {
                r.map(|(o, cs)| (o, cs.iter().flat_map(|c| c.iter().copied()).collect()))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn a_part_is_cut_at_piece_boundaries_whatever_its_chunks() {
        let p = HASH_PIECE_BYTES;
        for sizes in [&[1usize << 20][..], &[65_536], &[100_003, 7], &[3 << 20]] {
            let (at, end) = (4 * p, 4 * p + 2 * p + 12_345);
            let got = cut(at, end - at, sizes, end);
            let want: Vec<(u64, u64)> = vec![(at, p), (at + p, p), (at + 2 * p, 12_345)];
            let shape: Vec<(u64, u64)> = got
                .iter()
                .map(|r| r.as_ref().map(|(o, b)| (*o, b.len() as u64)).unwrap())
                .collect();
            assert_eq!(shape, want, "chunks of {sizes:?}");
            let joined: Vec<u8> = got.into_iter().flat_map(|r| r.unwrap().1).collect();
            let data: Vec<u8> = (0..end - at).map(|i| (i * 7 % 251) as u8).collect();
            assert!(joined == data, "chunks of {sizes:?}: the bytes changed");
        }
    }

    #[test]
    fn a_short_body_ends_with_its_short_piece() {
        let p = HASH_PIECE_BYTES;
        // The part should hold 2 pieces; the body has 1.5.
        let got = cut(0, p + p / 2, &[300_000], 2 * p);
        let shape: Vec<(u64, usize)> = got
            .iter()
            .map(|r| r.as_ref().map(|(o, b)| (*o, b.len())).unwrap())
            .collect();
        assert_eq!(shape, vec![(0, p as usize), (p, (p / 2) as usize)]);
    }

    #[test]
    fn a_body_error_ends_the_pieces_with_a_fetch_error() {
        let body = futures::stream::iter(vec![
            Ok(Bytes::from(vec![0u8; 1000])),
            Err(object_store::Error::Generic {
                store: "memory",
                source: "connection reset".into(),
            }),
            Ok(Bytes::from(vec![0u8; 1000])),
        ])
        .boxed();
        let got: Vec<_> = futures::executor::block_on(cut_pieces(context(4000), body, 0, 4000).collect::<Vec<_>>());
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(matches!(&got[0], Err(BinError::Fetch { .. })), "{got:?}");
    }
}
