//! The binary registry and cache over S3: an s3s-fs 0.14.1 server (`sigma_tests::s3`) started
//! in this process on 127.0.0.1 and a free port. Round trip, one store
//! read for 16 concurrent fetches, a tampered object, and a store that is
//! unreachable (a closed port; a server that never answers) becoming an
//! error within the deadline.

mod bins_common;

use bins_common::{files_in, io_variants, static_rust, S3Server, ACCESS_KEY, HELLO, SECRET_KEY};
use bytes::Bytes;
use sigma_control::bins::limits::{OBJECT_PART_BYTES, RECORD_TTL_DEFAULT};
use sigma_control::bins::{BinCache, BinError, BinName, BinRegistry, Digest, StoreConfig};
use std::time::{Duration, Instant};

const BUCKET: &str = "sigmaos-bins";

fn name(s: &str) -> BinName {
    BinName::parse(s).unwrap()
}

fn config(endpoint: &str, deadline: Duration) -> StoreConfig {
    StoreConfig {
        endpoint: Some(endpoint.to_owned()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        region: Some("us-east-1".into()),
        allow_http: true,
        reply_deadline: deadline,
        ..StoreConfig::url(format!("s3://{BUCKET}/bins"))
    }
}

fn hello_bytes() -> Bytes {
    Bytes::from(std::fs::read(static_rust()).unwrap())
}

#[tokio::test]
async fn s3_put_list_stat_remove_round_trip() {
    let started = Instant::now();
    let server = S3Server::start_or_panic(&[BUCKET]);
    eprintln!("s3s-fs listening after {:?} at {}", started.elapsed(), server.endpoint);
    let registry = BinRegistry::open(&config(&server.endpoint, Duration::from_secs(5))).unwrap();
    let bytes = hello_bytes();
    let t = Instant::now();
    let v1 = registry.put(&name("hello@v1"), bytes.clone()).await.unwrap();
    eprintln!("put of {} bytes: {:?}", bytes.len(), t.elapsed());
    assert_eq!(v1.digest, Digest::of(&bytes));
    registry.put(&name("hello"), bytes.clone()).await.unwrap();
    // Objects land under the prefix, in the bucket's directory.
    assert!(server.root.path().join(BUCKET).join("bins/hello/v1/elf").exists());

    let names: Vec<String> = registry
        .list()
        .await
        .unwrap()
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["hello@latest", "hello@v1"]);
    assert_eq!(registry.stat(&name("hello@v1")).await.unwrap(), v1);

    registry.remove(&name("hello@v1")).await.unwrap();
    let e = registry.stat(&name("hello@v1")).await.unwrap_err();
    assert!(matches!(e, BinError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("s3://sigmaos-bins/bins"), "{e}");
    let e = registry.remove(&name("hello@v1")).await.unwrap_err();
    assert!(matches!(e, BinError::NotFound { .. }), "{e}");
    let names: Vec<String> = registry
        .list()
        .await
        .unwrap()
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["hello@latest"]);

    let e = registry
        .put(&name("true"), Bytes::from(std::fs::read("/bin/true").unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(e, BinError::NotStaticElf { .. }), "{e}");
}

#[tokio::test]
async fn s3_sixteen_concurrent_fetches_one_store_read() {
    let server = S3Server::start_or_panic(&[BUCKET]);
    for (kind, io) in io_variants() {
        let registry = BinRegistry::open(&config(&server.endpoint, Duration::from_secs(5))).unwrap();
        let n = name(&format!("hello@{kind}"));
        let rec = registry.put(&n, hello_bytes()).await.unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = BinCache::open(cache_dir.path(), registry.clone(), io.clone(), RECORD_TTL_DEFAULT).unwrap();
        let t = Instant::now();
        let gets = (0..16).map(|_| {
            let cache = cache.clone();
            let n = n.clone();
            tokio::spawn(async move { cache.get(&n).await })
        });
        let results = futures::future::join_all(gets).await;
        eprintln!(
            "{kind}: 16 concurrent cold gets of {} bytes from S3: {:?}",
            rec.bytes,
            t.elapsed()
        );
        for r in results {
            assert_eq!(r.unwrap().unwrap().digest, rec.digest, "{kind}");
        }
        let st = registry.stats();
        assert_eq!((st.object_reads, st.record_reads), (1, 1), "{kind}: {st:?}");
        assert_eq!(st.object_bytes_read, rec.bytes, "{kind}");
        let t = Instant::now();
        let got = cache.get(&n).await.unwrap();
        eprintln!("{kind}: warm get: {:?}", t.elapsed());
        assert_eq!(registry.stats().object_reads, 1, "{kind}: a hit reads nothing");
        let out = std::process::Command::new(&got.path).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), HELLO, "{kind}");
    }
}

#[tokio::test]
async fn s3_tampered_object_is_refused_and_nothing_is_cached() {
    let server = S3Server::start_or_panic(&[BUCKET]);
    let registry = BinRegistry::open(&config(&server.endpoint, Duration::from_secs(5))).unwrap();
    let n = name("hello@v1");
    let rec = registry.put(&n, hello_bytes()).await.unwrap();
    let e = tampered_is_refused(&server, &registry, &n, |len| len / 2).await;
    assert!(e.to_string().contains(&rec.digest.to_string()), "{e}");
}

/// The server's file holding `n`'s object.
fn object_file(server: &S3Server, n: &BinName) -> std::path::PathBuf {
    server
        .root
        .path()
        .join(BUCKET)
        .join(format!("bins/{}/{}/elf", n.name(), n.version()))
}

/// Flips the byte at `at(len)` of `n`'s object in the server's files, then
/// asserts a fetch refuses it (digest mismatch) and caches nothing.
async fn tampered_is_refused(
    server: &S3Server,
    registry: &BinRegistry,
    n: &BinName,
    at: impl Fn(usize) -> usize,
) -> BinError {
    let object = object_file(server, n);
    let mut bytes = std::fs::read(&object).unwrap();
    let i = at(bytes.len());
    bytes[i] ^= 0x5a;
    std::fs::write(&object, bytes).unwrap();
    let (_, io) = io_variants().remove(0);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BinCache::open(cache_dir.path(), registry.clone(), io, RECORD_TTL_DEFAULT).unwrap();
    let e = cache.get(n).await.unwrap_err();
    assert!(matches!(e, BinError::DigestMismatch { .. }), "{e}");
    assert_eq!(files_in(cache_dir.path()), Vec::<String>::new());
    e
}

/// A static executable past `OBJECT_PART_BYTES`: hello, then a pattern
/// (bytes after the ELF's segments are allowed), 2.5 parts long.
fn big_bytes() -> Bytes {
    let mut b = hello_bytes().to_vec();
    let len = (OBJECT_PART_BYTES * 5 / 2) as usize;
    let mut x = 0x9e37_79b9u32;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.push(x as u8);
    }
    Bytes::from(b)
}

#[tokio::test]
async fn s3_a_large_object_comes_as_ranged_gets_in_order_and_is_checked_whole() {
    let server = S3Server::start_or_panic(&[BUCKET]);
    let registry = BinRegistry::open(&config(&server.endpoint, Duration::from_secs(5))).unwrap();
    let (n, bytes) = (name("big@v1"), big_bytes());
    let rec = registry.put(&n, bytes.clone()).await.unwrap();
    for (what, io) in io_variants() {
        let cache_dir = tempfile::tempdir().unwrap();
        let before = registry.stats();
        let cache = BinCache::open(cache_dir.path(), registry.clone(), io, RECORD_TTL_DEFAULT).unwrap();
        let got = cache.get(&n).await.unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), bytes, "{what}: the parts in order");
        let after = registry.stats();
        // Parts 2 and 3 (half a part) after the first.
        assert_eq!(after.object_range_reads - before.object_range_reads, 2, "{what}");
        assert_eq!(after.object_bytes_read - before.object_bytes_read, rec.bytes, "{what}");
    }
    // A byte changed in the last part: the digest, over all parts, refuses it.
    tampered_is_refused(&server, &registry, &n, |len| len - 100).await;
}

/// Asserts `e` came within `deadline` (plus scheduling slack) of `started`.
fn within(started: Instant, deadline: Duration, what: &str, e: &BinError) {
    let took = started.elapsed();
    eprintln!("{what}: {took:?}: {e}");
    assert!(
        took < deadline + Duration::from_millis(750),
        "{what}: took {took:?}, deadline {deadline:?}: {e}"
    );
}

#[tokio::test]
async fn s3_closed_port_is_an_error_within_the_deadline() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let deadline = Duration::from_millis(500);
    let registry = BinRegistry::open(&config(&format!("http://127.0.0.1:{port}"), deadline)).unwrap();
    let t = Instant::now();
    let e = registry.stat(&name("hello")).await.unwrap_err();
    within(t, deadline, "stat on a closed port", &e);
    assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
    let t = Instant::now();
    let e = registry.put(&name("hello"), hello_bytes()).await.unwrap_err();
    within(t, deadline, "put on a closed port", &e);
    assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
    let t = Instant::now();
    let e = registry.list().await.unwrap_err();
    within(t, deadline, "list on a closed port", &e);
    assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
    let (_, io) = io_variants().remove(1);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BinCache::open(cache_dir.path(), registry.clone(), io, RECORD_TTL_DEFAULT).unwrap();
    let t = Instant::now();
    let e = cache.get(&name("hello")).await.unwrap_err();
    within(t, deadline, "cache get on a closed port", &e);
    assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
}

#[tokio::test]
async fn s3_silent_server_is_unreachable_within_the_deadline() {
    // Connections are accepted (by the kernel's backlog) but nothing ever
    // answers: only the deadline ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let deadline = Duration::from_millis(500);
    let registry = BinRegistry::open(&config(&endpoint, deadline)).unwrap();
    let t = Instant::now();
    let e = registry.stat(&name("hello")).await.unwrap_err();
    within(t, deadline, "stat on a silent server", &e);
    assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
    assert!(
        e.to_string().contains("unreachable within 500ms: no answer") && e.to_string().contains("hello@latest"),
        "{e}"
    );
    let t = Instant::now();
    let e = registry.list().await.unwrap_err();
    within(t, deadline, "list on a silent server", &e);
    assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
    let (_, io) = io_variants().remove(1);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BinCache::open(cache_dir.path(), registry.clone(), io, RECORD_TTL_DEFAULT).unwrap();
    let t = Instant::now();
    let hello = name("hello");
    let gets = (0..16).map(|_| cache.get(&hello));
    for r in futures::future::join_all(gets).await {
        let e = r.unwrap_err();
        assert!(matches!(e, BinError::StoreUnreachable { .. }), "{e}");
    }
    within(
        t,
        deadline,
        "16 cache gets on a silent server",
        &BinError::StoreUnreachable {
            op: "fetch",
            name: "hello@latest".into(),
            store: endpoint.clone(),
            deadline,
            why: "no answer".into(),
        },
    );
    drop(silent);
}

/// A large object (ranged parts, all asked for at once) whose record says one length while the
/// store's object is another is refused as a size mismatch, and one removed behind its record
/// is not found; nothing is cached either way.
#[tokio::test]
async fn s3_a_ranged_object_resized_or_gone_behind_its_record_is_refused() {
    let server = S3Server::start_or_panic(&[BUCKET]);
    let registry = BinRegistry::open(&config(&server.endpoint, Duration::from_secs(5))).unwrap();
    let n = name("big@v2");
    let rec = registry.put(&n, big_bytes()).await.unwrap();
    let object = object_file(&server, &n);
    let get = || async {
        let (_, io) = io_variants().remove(0);
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = BinCache::open(cache_dir.path(), registry.clone(), io, RECORD_TTL_DEFAULT).unwrap();
        let e = cache.get(&n).await.unwrap_err();
        assert_eq!(files_in(cache_dir.path()), Vec::<String>::new(), "{e}");
        e
    };
    // One part longer than the record says.
    let mut longer = std::fs::read(&object).unwrap();
    longer.extend(std::iter::repeat_n(0u8, OBJECT_PART_BYTES as usize));
    std::fs::write(&object, &longer).unwrap();
    let e = get().await;
    assert!(
        matches!(e, BinError::SizeMismatch { expected, got, .. } if expected == rec.bytes && got == longer.len() as u64),
        "{e}"
    );
    std::fs::remove_file(&object).unwrap();
    let e = get().await;
    assert!(matches!(e, BinError::NotFound { .. }), "{e}");
}
