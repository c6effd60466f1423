//! A throwaway S3 server in this process: s3s-fs 0.14.1 (s3s's file-system
//! backend) served over HTTP/1 and HTTP/2 by hyper-util on 127.0.0.1 and a
//! free port, from a tokio runtime of two worker threads (so that, like a
//! real S3 endpoint, it answers requests in parallel: a fetch's ranged GETs),
//! with signature-v4 authentication against fixed keys ([`ACCESS_KEY`],
//! [`SECRET_KEY`]). Each bucket is a directory under a temporary root,
//! removed when the [`S3Server`] drops.
//!
//! Used by the binary-store tests of `sigma-control` (`control/tests/bins_s3.rs`,
//! through `control/tests/bins_common`) and by sigmabench's `spawn` suite,
//! whose `cold-start-s3` case points a sigmad's binary store at it
//! (`sigmad --store s3://BUCKET --s3-endpoint ENDPOINT --s3-allow-http`
//! with [`ACCESS_KEY`] and [`SECRET_KEY`] in `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`).
//!
//! The server's work (request parsing, signature checks, file reads and
//! writes) runs on its own thread of the calling process, so a benchmark
//! counts its CPU with the process's.
//!
//! One change to s3s-fs: GetObject's body. s3s-fs streams an object 4 KiB
//! at a time through tokio's blocking pool, one thread hop per 4 KiB
//! (2,900 for an 11 MiB binary): with curl as its client it served an
//! 11 MiB object in 75-90 ms here, so the fixture, not the client, was the
//! measure of a fetch (sigmabench's cold-start-s3: 108 ms, then 57-65 ms
//! with this change, quick runs of 2026-11-27 on a slow spell of the VM). [`Served`]
//! answers GetObject with s3s-fs's own answer (its checks, range, ETag and
//! metadata) and replaces only the body by the same bytes of the same file
//! read [`GET_READ_BYTES`] at a time. Every other operation is s3s-fs's.

use std::fmt;
use std::path::PathBuf;

/// The access key id the server accepts.
pub const ACCESS_KEY: &str = "sigma-test";
/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "sigma-test-secret";
/// The region to sign for (s3s-fs has one store; any region is served).
pub const REGION: &str = "us-east-1";

/// The size of each read of an object's file while serving a GetObject
/// body (s3s-fs reads 4 KiB at a time; see the module's doc).
pub const GET_READ_BYTES: usize = 1024 * 1024;

/// s3s-fs with GetObject's body read [`GET_READ_BYTES`] at a time; every
/// operation is s3s-fs's (listed below: those s3s-fs implements).
struct Served {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
}

/// Hands operation `$op` to s3s-fs. (Written out as `async_trait` writes
/// an `async fn`: the attribute does not see into a macro's expansion.)
macro_rules! delegate {
    ($($op:ident: $input:ident => $output:ident),* $(,)?) => {
        $(
            fn $op<'life0, 'async_trait>(
                &'life0 self,
                req: s3s::S3Request<s3s::dto::$input>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = s3s::S3Result<s3s::S3Response<s3s::dto::$output>>>
                        + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                s3s::S3::$op(&self.fs, req)
            }
        )*
    };
}

#[async_trait::async_trait]
impl s3s::S3 for Served {
    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput,
        copy_object: CopyObjectInput => CopyObjectOutput,
        delete_bucket: DeleteBucketInput => DeleteBucketOutput,
        delete_object: DeleteObjectInput => DeleteObjectOutput,
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        list_buckets: ListBucketsInput => ListBucketsOutput,
        list_objects: ListObjectsInput => ListObjectsOutput,
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
        put_object: PutObjectInput => PutObjectOutput,
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
        upload_part: UploadPartInput => UploadPartOutput,
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
        list_parts: ListPartsInput => ListPartsOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    }

    /// s3s-fs's answer with its body replaced: the same range of the same
    /// file, read [`GET_READ_BYTES`] at a time.
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let (bucket, key, range) = (req.input.bucket.clone(), req.input.key.clone(), req.input.range);
        // s3s-fs checks the bucket, key (no escape from its root), range
        // and builds the headers; the path is then known to be good.
        let mut answer = s3s::S3::get_object(&self.fs, req).await?;
        let io_error = |e: std::io::Error| s3s::s3_error!(e, InternalError, "reading the object");
        let mut file = tokio::fs::File::open(self.root.join(&bucket).join(&key))
            .await
            .map_err(io_error)?;
        let file_len = file.metadata().await.map_err(io_error)?.len();
        let span = match range {
            None => 0..file_len,
            Some(range) => range.check(file_len)?,
        };
        file.seek(std::io::SeekFrom::Start(span.start))
            .await
            .map_err(io_error)?;
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(span.end - span.start), GET_READ_BYTES);
        answer.output.body = Some(s3s::dto::StreamingBlob::wrap(body));
        Ok(answer)
    }
}

/// Why the server did not start.
#[derive(Debug)]
pub struct S3Error(pub String);

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for S3Error {}

/// An S3 server (s3s-fs) in this process, on 127.0.0.1 and a free port,
/// serving [`S3Server::root`] (each directory a bucket) on a thread of its
/// own; stopped, and its root removed, on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The buckets' parent directory: bucket `B`'s object `K` is the file
    /// `root/B/K`.
    pub root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for S3Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint)
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Starts a server holding the (empty) `buckets`; an error says which
    /// step failed.
    pub fn start(buckets: &[&str]) -> Result<S3Server, S3Error> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let err = |what: &str, e: &dyn fmt::Debug| S3Error(format!("starting the S3 server: {what}: {e:?}"));
        let root = tempfile::Builder::new()
            .prefix("sigma-s3-")
            .tempdir()
            .map_err(|e| err("creating its root directory", &e))?;
        for bucket in buckets {
            std::fs::create_dir_all(root.path().join(bucket))
                .map_err(|e| err(&format!("creating bucket {bucket}"), &e))?;
        }
        let fs = Served {
            fs: s3s_fs::FileSystem::new(root.path()).map_err(|e| err("s3s-fs", &e))?,
            root: root.path().to_path_buf(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| err("binding 127.0.0.1:0", &e))?;
        let addr = listener.local_addr().map_err(|e| err("its address", &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err("a non-blocking listener", &e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| err("its tokio runtime", &e))?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3s-fs".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut b = S3ServiceBuilder::new(fs);
                    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                    let service = b.build();
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("the S3 server cannot listen: {e}");
                            return;
                        }
                    };
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => {
                                let Ok((socket, _)) = accepted else { continue };
                                let _ = socket.set_nodelay(true);
                                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                                tokio::spawn(async move { let _ = conn.await; });
                            }
                            _ = &mut stop_rx => break,
                        }
                    }
                });
            })
            .map_err(|e| err("spawning its thread", &e))?;
        Ok(S3Server {
            endpoint: format!("http://{addr}"),
            root,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// [`S3Server::start`] for tests: panics (failing the test) if it does
    /// not start.
    #[track_caller]
    pub fn start_or_panic(buckets: &[&str]) -> S3Server {
        S3Server::start(buckets).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The directory holding bucket `bucket`'s objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server answers S3 on its endpoint, refuses an unsigned request,
    /// and is gone (port closed, root removed) once dropped.
    #[test]
    fn it_serves_s3_refuses_unsigned_requests_and_goes_on_drop() {
        let server = S3Server::start(&["bucket-one", "bucket-two"]).unwrap();
        assert!(server.bucket_dir("bucket-one").is_dir() && server.bucket_dir("bucket-two").is_dir());
        let addr: std::net::SocketAddr = server.endpoint.strip_prefix("http://").unwrap().parse().unwrap();
        let reply = crate::etcd::http_get(addr, "/bucket-one").expect("an answer");
        assert!(
            reply.starts_with("HTTP/1.0 403") || reply.starts_with("HTTP/1.1 403"),
            "{reply}"
        );
        assert!(reply.contains("<Error>"), "an S3 error document: {reply}");
        let root = server.root.path().to_path_buf();
        drop(server);
        assert!(!root.exists(), "{} left behind", root.display());
        assert!(std::net::TcpStream::connect(addr).is_err(), "still listening on {addr}");
    }
}
