//! The binary store's calls, made on the control thread. The store
//! (`object_store`, and its S3 client) and the cache's fetch tasks run on
//! the control thread's tokio runtime; the admin service may run on a
//! data-plane core, so it asks through a bounded queue ([`BinClient`]) and
//! waits on a oneshot answer, which works on any executor. A warm fetch
//! (the cache's memo of the name is fresh and its file verified) is
//! answered where the caller runs, without the hop ([`BinCache::try_fresh`]).
//! A fetch answers with the [`CachedBin`], which pins the cache file: the
//! spawn hands it to the spawner, which drops it once the sandbox holds the
//! binary as a detached bind mount, so the cache never evicts a file
//! between a spawn getting its path and the sandbox taking it.

use super::ProcError;
use crate::bins::{BinCache, BinError, BinName, CachedBin, EarlyNotice, Record};
use sigma_ep::proc::WireBin;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// Binary-store calls queued for the control thread, at most.
pub const BIN_JOBS_QUEUE_MAX: usize = 256;

/// A call for the control thread.
#[derive(Debug)]
enum BinJob {
    Fetch {
        program: String,
        early: Option<EarlyNotice>,
        reply: oneshot::Sender<Result<CachedBin, ProcError>>,
    },
    PutFile {
        program: String,
        path: PathBuf,
        reply: oneshot::Sender<Result<WireBin, ProcError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<WireBin>, ProcError>>,
    },
    Remove {
        program: String,
        reply: oneshot::Sender<Result<(), ProcError>>,
    },
}

/// The admin side's handle on the control thread's binary store.
#[derive(Debug, Clone)]
pub struct BinClient {
    jobs: mpsc::Sender<BinJob>,
    /// The cache the server serves, for warm fetches without the hop.
    cache: Option<BinCache>,
}

/// The control thread's side: run [`BinServer::run`] on its runtime.
#[derive(Debug)]
pub struct BinServer {
    jobs: mpsc::Receiver<BinJob>,
}

/// A client and the server it talks to; with `cache` (the one the server
/// will run with), warm fetches are answered by the client itself.
pub fn bin_channel(cache: Option<BinCache>) -> (BinClient, BinServer) {
    let (tx, rx) = mpsc::channel(BIN_JOBS_QUEUE_MAX);
    (BinClient { jobs: tx, cache }, BinServer { jobs: rx })
}

fn gone() -> ProcError {
    ProcError::new("unavailable", "the control thread serving the binary store has stopped")
}

fn wire(r: &Record) -> WireBin {
    WireBin {
        name: r.name.to_string(),
        bytes: r.bytes,
        digest: format!("blake3:{}", r.digest),
    }
}

/// The error kind a binary-store error travels as.
fn store_error(e: BinError, fetching: bool) -> ProcError {
    let kind = match &e {
        BinError::InvalidName { .. } => "invalid",
        BinError::NotStaticElf { .. } | BinError::TooLarge { .. } if !fetching => "invalid",
        BinError::NotFound { .. } if !fetching => "not-found",
        BinError::StoreUnreachable { .. } if !fetching => "unavailable",
        // Room comes back as spawns under way finish.
        BinError::CacheFull { .. } => "busy",
        _ if fetching => "fetch-failed",
        _ => "store",
    };
    ProcError::new(kind, e.to_string())
}

impl BinClient {
    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T, ProcError>>) -> BinJob) -> Result<T, ProcError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(job(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The cache file of `program`, fetched and verified if need be, and
    /// pinned in the cache until the [`CachedBin`] is dropped; `early`
    /// hears of the file before it is checked if this call starts its
    /// fetch ([`BinCache::get_early`]).
    pub async fn fetch(&self, program: String, early: Option<EarlyNotice>) -> Result<CachedBin, ProcError> {
        if let (Some(cache), Ok(name)) = (&self.cache, BinName::parse(&program)) {
            if let Some(hit) = cache.try_fresh(&name) {
                return Ok(hit);
            }
        }
        self.ask(|reply| BinJob::Fetch { program, early, reply }).await
    }

    /// Puts the file at `path` in the store as `program`.
    pub async fn put_file(&self, program: String, path: PathBuf) -> Result<WireBin, ProcError> {
        self.ask(|reply| BinJob::PutFile { program, path, reply }).await
    }

    /// The binaries in the store.
    pub async fn list(&self) -> Result<Vec<WireBin>, ProcError> {
        self.ask(|reply| BinJob::List { reply }).await
    }

    /// Removes `program` from the store.
    pub async fn remove(&self, program: String) -> Result<(), ProcError> {
        self.ask(|reply| BinJob::Remove { program, reply }).await
    }
}

impl BinServer {
    /// Serves calls with `cache` (and its registry) until every client is
    /// dropped; each call is a task of its own. Must run on a tokio runtime.
    pub async fn run(mut self, cache: BinCache) {
        while let Some(job) = self.jobs.recv().await {
            let cache = cache.clone();
            tokio::spawn(async move {
                match job {
                    BinJob::Fetch { program, early, reply } => {
                        let r = match BinName::parse(&program) {
                            Ok(name) => cache.get_early(&name, early).await.map_err(|e| store_error(e, true)),
                            Err(e) => Err(store_error(e, false)),
                        };
                        let _ = reply.send(r);
                    }
                    BinJob::PutFile { program, path, reply } => {
                        let r = match BinName::parse(&program) {
                            Ok(name) => cache
                                .registry()
                                .put_file(&name, &path)
                                .await
                                .map(|r| {
                                    cache.remember_put(&r);
                                    wire(&r)
                                })
                                .map_err(|e| store_error(e, false)),
                            Err(e) => Err(store_error(e, false)),
                        };
                        let _ = std::fs::remove_file(&path);
                        let _ = reply.send(r);
                    }
                    BinJob::List { reply } => {
                        let r = cache
                            .registry()
                            .list()
                            .await
                            .map(|l| l.iter().map(wire).collect())
                            .map_err(|e| store_error(e, false));
                        let _ = reply.send(r);
                    }
                    BinJob::Remove { program, reply } => {
                        let r = match BinName::parse(&program) {
                            Ok(name) => {
                                let r = cache.registry().remove(&name).await.map_err(|e| store_error(e, false));
                                cache.forget_record(&name);
                                r
                            }
                            Err(e) => Err(store_error(e, false)),
                        };
                        let _ = reply.send(r);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bins::{BinRegistry, BlockingIo, CacheIo, StoreConfig};
    use std::sync::Arc;
    use std::time::Duration;

    fn elf(len: usize) -> Vec<u8> {
        crate::bins::elf::minimal_static(len, 7)
    }

    /// A put through sigmad's binary server leaves the record in the
    /// cache's memo: the start right after it reads no record from the
    /// store (the object still is fetched). A remove forgets it: the next
    /// start asks the store, which says the binary is gone.
    #[tokio::test(flavor = "current_thread")]
    async fn a_put_record_is_remembered_and_a_remove_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = BinRegistry::open(&StoreConfig::local(dir.path().join("store"))).unwrap();
        let io: Arc<dyn CacheIo> = Arc::new(BlockingIo);
        let cache = BinCache::open(dir.path().join("cache"), registry.clone(), io, Duration::from_secs(60)).unwrap();
        let (client, server) = bin_channel(Some(cache.clone()));
        tokio::spawn(server.run(cache.clone()));
        let upload = dir.path().join("upload");
        std::fs::write(&upload, elf(8192)).unwrap();
        client.put_file("app".into(), upload).await.expect("put");
        let before = registry.stats();
        let bin = client.fetch("app".into(), None).await.expect("fetch");
        let after = registry.stats();
        assert_eq!(
            after.record_reads, before.record_reads,
            "the put's record was read again"
        );
        assert_eq!(after.object_reads, before.object_reads + 1, "the object is fetched");
        drop(bin);
        client.remove("app".into()).await.expect("remove");
        let gone = client.fetch("app".into(), None).await;
        assert!(
            gone.is_err(),
            "a removed binary was still found: {:?}",
            gone.map(|b| b.path)
        );
        assert_eq!(
            registry.stats().record_reads,
            after.record_reads + 1,
            "the store was asked"
        );
    }
}
