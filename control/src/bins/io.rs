//! The cache's file IO: positional reads (a local store's objects, and the
//! re-check of a cached file) and writes (into the cache), behind
//! [`CacheIo`] — the issue's `CacheWriter`, with reads beside the writes.
//!
//! Two implementations:
//!
//! - [`DataPlaneIo`]: each read, write and piece hash is a job sent to a
//!   data-plane core (one of several, in turn), which runs it as
//!   `sigma_dataplane::read_at` / `write_at` (an io_uring READ/WRITE, or
//!   the core's file pool on epoll) in a BE task, so a cache fill never
//!   delays LC work on that core. A piece hash reads and hashes on the
//!   core; otherwise the control thread (tokio, current-thread) hashes and
//!   hands buffers over. The queue
//!   is a bounded tokio mpsc channel rather than the data plane's SPSC
//!   channel because several fetches send on it at once; both ends only
//!   need wakers, and a waker from another thread reaches the core through
//!   its remote queue.
//! - [`BlockingIo`]: pread/pwrite on tokio's blocking pool; for tools and
//!   tests without a data-plane core.
//!
//! fsync runs on tokio's blocking pool in both: the data plane has no
//! fsync operation (its ring's allow-list holds no FSYNC opcode), and one
//! fsync per fetched binary is not worth one.
//!
//! A job owns its file (`Arc<File>`) and buffer, so a fetch that gives up
//! while a job runs leaves nothing dangling: the job finishes on its own
//! fd and buffer, then drops them.

use bytes::Bytes;
use futures::future::BoxFuture;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::digest::{PieceHash, PieceHasher};
use super::limits::{CACHE_WRITE_QUEUE_MAX, HASH_READ_BYTES};

/// One piece of a file hashed by [`CacheIo::hash_piece`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedPiece {
    /// The piece's hash.
    pub hash: PieceHash,
    /// Bytes read: the piece's length, less only where the file ended.
    pub bytes: u64,
    /// The piece's first bytes, as many as were asked for (and read).
    pub head: Vec<u8>,
}

/// What a piece's reads have given so far.
struct PieceState {
    hasher: PieceHasher,
    head: Vec<u8>,
    head_len: usize,
    bytes: u64,
}

impl PieceState {
    fn new(hasher: PieceHasher, head_len: usize) -> PieceState {
        PieceState {
            hasher,
            head: Vec::with_capacity(head_len),
            head_len,
            bytes: 0,
        }
    }

    /// Takes the next bytes read.
    fn take(&mut self, bytes: &[u8]) {
        let room = self.head_len - self.head.len();
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    fn done(self) -> HashedPiece {
        HashedPiece {
            hash: self.hasher.finish(),
            bytes: self.bytes,
            head: self.head,
        }
    }
}

/// The cache's file operations.
pub trait CacheIo: Send + Sync + std::fmt::Debug + 'static {
    /// Reads up to `len` bytes of `file` at `offset`; fewer only at the end
    /// of the file.
    fn read_at(&self, file: Arc<File>, offset: u64, len: usize) -> BoxFuture<'static, io::Result<Bytes>>;

    /// Writes all of `bytes` to `file` at `offset`.
    fn write_all_at(&self, file: Arc<File>, offset: u64, bytes: Bytes) -> BoxFuture<'static, io::Result<()>>;

    /// Reads `len` bytes of `file` at `offset` (fewer only where the file
    /// ends) in reads of [`HASH_READ_BYTES`] into one buffer, reused, and
    /// hashes each read right after it, as the piece `hasher` was made for;
    /// keeps the first `head` bytes. The check of a file already on this
    /// machine: nothing is copied out but the head.
    fn hash_piece(
        &self,
        file: Arc<File>,
        offset: u64,
        len: u64,
        hasher: PieceHasher,
        head: usize,
    ) -> BoxFuture<'static, io::Result<HashedPiece>>;

    /// Writes `chunks` to `file` from `offset` on, one after another,
    /// hashing each as the piece `hasher` was made for; keeps the first
    /// `head` bytes. A piece of a remote object, written and hashed on a
    /// core while the control thread receives the rest.
    fn write_hash_piece(
        &self,
        file: Arc<File>,
        offset: u64,
        chunks: Vec<Bytes>,
        hasher: PieceHasher,
        head: usize,
    ) -> BoxFuture<'static, io::Result<HashedPiece>>;

    /// How many pieces this hashes at once with profit: the data-plane
    /// cores serving it, or the CPUs for the blocking pool.
    fn parallelism(&self) -> usize;

    /// Makes `file`'s contents durable.
    fn sync_all(&self, file: Arc<File>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(blocking(move || file.sync_all()))
    }

    /// What this is, for logs: `data-plane` or `blocking`.
    fn kind(&self) -> &'static str;
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("blocking file job: {e}"))))
}

/// Reads up to `len` bytes at `offset` with pread, retrying short reads
/// until `len` bytes or the end of the file.
fn pread_full(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(Bytes::from(buf))
}

/// pread/pwrite on tokio's blocking pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct BlockingIo;

impl CacheIo for BlockingIo {
    fn read_at(&self, file: Arc<File>, offset: u64, len: usize) -> BoxFuture<'static, io::Result<Bytes>> {
        Box::pin(blocking(move || pread_full(&file, offset, len)))
    }

    fn write_all_at(&self, file: Arc<File>, offset: u64, bytes: Bytes) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(blocking(move || file.write_all_at(&bytes, offset)))
    }

    fn hash_piece(
        &self,
        file: Arc<File>,
        offset: u64,
        len: u64,
        hasher: PieceHasher,
        head: usize,
    ) -> BoxFuture<'static, io::Result<HashedPiece>> {
        Box::pin(blocking(move || {
            let mut piece = PieceState::new(hasher, head);
            let mut buf = vec![0u8; HASH_READ_BYTES];
            while piece.bytes < len {
                let want = (len - piece.bytes).min(HASH_READ_BYTES as u64) as usize;
                match file.read_at(&mut buf[..want], offset + piece.bytes) {
                    Ok(0) => break,
                    Ok(n) => piece.take(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(piece.done())
        }))
    }

    fn write_hash_piece(
        &self,
        file: Arc<File>,
        offset: u64,
        chunks: Vec<Bytes>,
        hasher: PieceHasher,
        head: usize,
    ) -> BoxFuture<'static, io::Result<HashedPiece>> {
        Box::pin(blocking(move || {
            let mut piece = PieceState::new(hasher, head);
            for chunk in &chunks {
                let at = offset + piece.bytes;
                piece.take(chunk);
                file.write_all_at(chunk, at)?;
            }
            Ok(piece.done())
        }))
    }

    fn parallelism(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn kind(&self) -> &'static str {
        "blocking"
    }
}

/// A job for the data-plane core.
enum Job {
    Read {
        file: Arc<File>,
        offset: u64,
        len: usize,
        reply: oneshot::Sender<io::Result<Bytes>>,
    },
    Write {
        file: Arc<File>,
        offset: u64,
        bytes: Bytes,
        reply: oneshot::Sender<io::Result<()>>,
    },
    WriteHash {
        file: Arc<File>,
        offset: u64,
        chunks: Vec<Bytes>,
        /// Boxed, as in `Hash`.
        hasher: Box<PieceHasher>,
        head: usize,
        reply: oneshot::Sender<io::Result<HashedPiece>>,
    },
    Hash {
        file: Arc<File>,
        offset: u64,
        len: u64,
        /// Boxed: a BLAKE3 hasher is about 2 KiB, the other jobs' fields
        /// a few words.
        hasher: Box<PieceHasher>,
        head: usize,
        reply: oneshot::Sender<io::Result<HashedPiece>>,
    },
}

/// Cache IO on data-plane cores; see the module doc. Made with
/// [`DataPlaneIo::new`] (one core) or [`DataPlaneIo::with_cores`], whose
/// other halves run on the cores. Jobs go to the cores in turn.
#[derive(Debug, Clone)]
pub struct DataPlaneIo {
    jobs: Arc<[mpsc::Sender<Job>]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

/// The core's half of [`DataPlaneIo`]: run [`DataPlaneIoServer::run`] on a
/// data-plane core (inside `Core::block_on`, or spawned there).
#[derive(Debug)]
pub struct DataPlaneIoServer {
    jobs: mpsc::Receiver<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Read { offset, len, .. } => write!(f, "Read {{ offset: {offset}, len: {len} }}"),
            Job::Write { offset, bytes, .. } => write!(f, "Write {{ offset: {offset}, len: {} }}", bytes.len()),
            Job::Hash { offset, len, .. } => write!(f, "Hash {{ offset: {offset}, len: {len} }}"),
            Job::WriteHash { offset, chunks, .. } => {
                write!(f, "WriteHash {{ offset: {offset}, chunks: {} }}", chunks.len())
            }
        }
    }
}

fn core_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the data-plane core serving cache IO has stopped",
    )
}

impl DataPlaneIo {
    /// A client and the server to run on a core.
    pub fn new() -> (DataPlaneIo, DataPlaneIoServer) {
        let (io, mut servers) = DataPlaneIo::with_cores(1);
        (io, servers.pop().expect("one server"))
    }

    /// A client and one server for each of `cores` cores (at least one).
    pub fn with_cores(cores: usize) -> (DataPlaneIo, Vec<DataPlaneIoServer>) {
        let (txs, servers): (Vec<_>, Vec<_>) = (0..cores.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(CACHE_WRITE_QUEUE_MAX);
                (tx, DataPlaneIoServer { jobs: rx })
            })
            .unzip();
        let io = DataPlaneIo {
            jobs: txs.into(),
            next: Arc::default(),
        };
        (io, servers)
    }

    /// Sends the job `make` builds around its reply channel to the next
    /// core in turn, and waits for the answer.
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<io::Result<T>>) -> Job + Send + 'static,
    ) -> BoxFuture<'static, io::Result<T>> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.jobs.len();
        let jobs = self.jobs[i].clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            jobs.send(make(reply)).await.map_err(|_| core_gone())?;
            answer.await.map_err(|_| core_gone())?
        })
    }
}

impl CacheIo for DataPlaneIo {
    fn read_at(&self, file: Arc<File>, offset: u64, len: usize) -> BoxFuture<'static, io::Result<Bytes>> {
        self.ask(move |reply| Job::Read {
            file,
            offset,
            len,
            reply,
        })
    }

    fn write_all_at(&self, file: Arc<File>, offset: u64, bytes: Bytes) -> BoxFuture<'static, io::Result<()>> {
        self.ask(move |reply| Job::Write {
            file,
            offset,
            bytes,
            reply,
        })
    }

    fn hash_piece(
        &self,
        file: Arc<File>,
        offset: u64,
        len: u64,
        hasher: PieceHasher,
        head: usize,
    ) -> BoxFuture<'static, io::Result<HashedPiece>> {
        self.ask(move |reply| Job::Hash {
            file,
            offset,
            len,
            hasher: Box::new(hasher),
            head,
            reply,
        })
    }

    fn write_hash_piece(
        &self,
        file: Arc<File>,
        offset: u64,
        chunks: Vec<Bytes>,
        hasher: PieceHasher,
        head: usize,
    ) -> BoxFuture<'static, io::Result<HashedPiece>> {
        self.ask(move |reply| Job::WriteHash {
            file,
            offset,
            chunks,
            hasher: Box::new(hasher),
            head,
            reply,
        })
    }

    fn parallelism(&self) -> usize {
        self.jobs.len()
    }

    fn kind(&self) -> &'static str {
        "data-plane"
    }
}

impl DataPlaneIoServer {
    /// Serves jobs until every [`DataPlaneIo`] is dropped. Must run on a
    /// data-plane core.
    pub async fn run(mut self) {
        while let Some(job) = self.jobs.recv().await {
            sigma_dataplane::spawn_be(run_job(job));
        }
    }
}

/// Runs `job` and answers it. The job's file goes before its answer: the
/// cache renames and execs a file right after its last write, and a
/// writable fd still open here (on this core's thread) would make that
/// exec fail with ETXTBSY.
async fn run_job(job: Job) {
    use std::os::fd::AsRawFd;
    match job {
        Job::Read {
            file,
            offset,
            len,
            reply,
        } => {
            let result = core_read_at(file.as_raw_fd(), offset, len).await;
            drop(file);
            let _ = reply.send(result);
        }
        Job::Write {
            file,
            offset,
            bytes,
            reply,
        } => {
            let result = core_write_all_at(file.as_raw_fd(), offset, bytes).await;
            drop(file);
            let _ = reply.send(result);
        }
        Job::WriteHash {
            file,
            offset,
            chunks,
            hasher,
            head,
            reply,
        } => {
            let mut piece = PieceState::new(*hasher, head);
            let mut result = Ok(());
            for chunk in chunks {
                // Hashed first: the hash brings the chunk into this core's
                // cache, and the write, which takes it, copies it from there.
                let at = offset + piece.bytes;
                piece.take(&chunk);
                if let Err(e) = core_write_all_at(file.as_raw_fd(), at, chunk).await {
                    result = Err(e);
                    break;
                }
            }
            drop(file);
            let _ = reply.send(result.map(|()| piece.done()));
        }
        Job::Hash {
            file,
            offset,
            len,
            hasher,
            head,
            reply,
        } => {
            let result = core_hash_piece(file.as_raw_fd(), offset, len, *hasher, head).await;
            drop(file);
            let _ = reply.send(result);
        }
    }
}

/// [`CacheIo::hash_piece`] on the current data-plane core: io_uring reads
/// (or the core's file pool on epoll) into one buffer, each hashed on the
/// core right after it lands, while its bytes are in this core's cache.
/// The hash of a read (64 KiB at the 2.0-2.8 GB/s BLAKE3 ran at here:
/// 23-33 µs) runs between the
/// core's other tasks, in this BE task. `fd` must stay open until this
/// completes or is dropped.
pub(crate) async fn core_hash_piece(
    fd: std::os::fd::RawFd,
    offset: u64,
    len: u64,
    hasher: PieceHasher,
    head: usize,
) -> io::Result<HashedPiece> {
    let mut piece = PieceState::new(hasher, head);
    let mut buf: Vec<u8> = Vec::with_capacity(HASH_READ_BYTES);
    while piece.bytes < len {
        let want = (len - piece.bytes).min(HASH_READ_BYTES as u64) as usize;
        buf.clear();
        let (res, back) = sigma_dataplane::read_at(fd, buf, offset + piece.bytes).await;
        buf = back;
        match res {
            Ok(0) => break,
            // The read may run past the piece (it fills the buffer): only
            // the piece's bytes count.
            Ok(n) => piece.take(&buf[..n.min(want)]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(piece.done())
}

/// Reads up to `len` bytes of `fd` at `offset` on the current data-plane
/// core (io_uring READ, or the core's file pool on epoll); fewer only at
/// the end of the file. `fd` must stay open until this completes or is
/// dropped.
pub(crate) async fn core_read_at(fd: std::os::fd::RawFd, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut out: Vec<u8> = Vec::new();
    while out.len() < len {
        let want = len - out.len();
        let at = offset + out.len() as u64;
        let (res, buf) = sigma_dataplane::read_at(fd, Vec::with_capacity(want), at).await;
        match res {
            Ok(0) => break,
            // Most reads are whole: keep the buffer, copy nothing.
            Ok(_) if out.is_empty() => out = buf,
            Ok(_) => out.extend_from_slice(&buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Bytes::from(out))
}

/// Writes all of `bytes` to `fd` at `offset` on the current data-plane
/// core. `fd` must stay open until this completes or is dropped.
pub(crate) async fn core_write_all_at(fd: std::os::fd::RawFd, offset: u64, mut bytes: Bytes) -> io::Result<()> {
    let mut at = offset;
    while !bytes.is_empty() {
        let (res, sent) = sigma_dataplane::write_at(fd, bytes, at).await;
        bytes = sent;
        match res {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes")),
            Ok(n) => {
                at += n as u64;
                let _ = bytes.split_to(n.min(bytes.len()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
