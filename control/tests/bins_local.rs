//! The binary registry and cache over a local directory store: put, list,
//! stat, remove; cache hits; one store read for 16 concurrent fetches;
//! digest and size mismatches leaving nothing cached; the size limit; and
//! the static-executable check at put and at fetch. Cache tests run with
//! both cache IO variants (data-plane core, blocking pool).

mod bins_common;

use bins_common::{files_in, io_variants, static_c, static_rust, HELLO};
use bytes::Bytes;
use sigma_control::bins::limits::{BIN_BYTES_MAX, RECORD_TTL_DEFAULT};
use sigma_control::bins::{BinCache, BinError, BinName, BinRegistry, CacheIo, Digest, StoreConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn name(s: &str) -> BinName {
    BinName::parse(s).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    store_dir: PathBuf,
    cache_dir: PathBuf,
    registry: BinRegistry,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let cache_dir = dir.path().join("cache");
    let registry = BinRegistry::open(&StoreConfig::local(&store_dir)).unwrap();
    Setup {
        _dir: dir,
        store_dir,
        cache_dir,
        registry,
    }
}

impl Setup {
    fn cache(&self, io: &Arc<dyn CacheIo>, record_ttl: Duration) -> BinCache {
        BinCache::open(&self.cache_dir, self.registry.clone(), io.clone(), record_ttl).unwrap()
    }

    /// The stored object of `name` (the local store's layout).
    fn object(&self, name: &BinName) -> PathBuf {
        self.store_dir.join(name.name()).join(name.version()).join("elf")
    }

    fn record_file(&self, name: &BinName) -> PathBuf {
        self.store_dir
            .join(name.name())
            .join(name.version())
            .join("record.json")
    }
}

fn hello_bytes() -> Bytes {
    Bytes::from(std::fs::read(static_rust()).unwrap())
}

#[tokio::test]
async fn put_list_stat_remove_round_trip() {
    let s = setup();
    let bytes = hello_bytes();
    let v1 = s.registry.put_file(&name("hello@v1"), &static_rust()).await.unwrap();
    assert_eq!(v1.bytes, bytes.len() as u64);
    assert_eq!(v1.digest, Digest::of(&bytes));
    let latest = s.registry.put(&name("hello"), bytes.clone()).await.unwrap();
    assert_eq!(latest.name.to_string(), "hello@latest");
    if let Some(c) = static_c() {
        let rec = s.registry.put_file(&name("true-c@1.0"), &c).await.unwrap();
        assert_eq!(rec.bytes, std::fs::metadata(&c).unwrap().len());
    }

    let listed = s.registry.list().await.unwrap();
    let names: Vec<String> = listed.iter().map(|r| r.name.to_string()).collect();
    let mut expect = vec!["hello@latest", "hello@v1"];
    if static_c().is_some() {
        expect.push("true-c@1.0");
    }
    assert_eq!(names, expect);
    assert_eq!(listed[1], v1);
    assert_eq!(s.registry.stat(&name("hello@v1")).await.unwrap(), v1);

    // A put replaces: the record follows the new bytes.
    let c_bytes = static_c().map(|c| Bytes::from(std::fs::read(c).unwrap()));
    if let Some(c_bytes) = c_bytes {
        let replaced = s.registry.put(&name("hello@v1"), c_bytes.clone()).await.unwrap();
        assert_eq!(replaced.digest, Digest::of(&c_bytes));
        assert_eq!(s.registry.stat(&name("hello@v1")).await.unwrap(), replaced);
    }

    s.registry.remove(&name("hello@v1")).await.unwrap();
    let e = s.registry.stat(&name("hello@v1")).await.unwrap_err();
    assert!(matches!(e, BinError::NotFound { .. }), "{e}");
    assert!(
        e.to_string().contains("hello@v1") && e.to_string().contains(&s.store_dir.display().to_string()),
        "{e}"
    );
    assert!(!s.object(&name("hello@v1")).exists());
    let e = s.registry.remove(&name("hello@v1")).await.unwrap_err();
    assert!(matches!(e, BinError::NotFound { .. }), "{e}");
    let names: Vec<String> = s
        .registry
        .list()
        .await
        .unwrap()
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert!(!names.contains(&"hello@v1".to_string()) && names.contains(&"hello@latest".to_string()));
    assert_eq!(
        s.registry.stats().object_reads,
        0,
        "put, list, stat, remove read no object"
    );
}

#[tokio::test]
async fn cache_hit_after_first_fetch_and_runs() {
    for (kind, io) in io_variants() {
        let s = setup();
        let bytes = hello_bytes();
        let n = name("hello@v1");
        let rec = s.registry.put(&n, bytes.clone()).await.unwrap();
        // Record TTL zero: every get asks the store for the record, so the
        // object reads alone show what the cache saves.
        let cache = s.cache(&io, Duration::ZERO);
        let got = cache.get(&n).await.unwrap();
        assert_eq!(got.digest, rec.digest, "{kind}");
        assert_eq!(got.path, s.cache_dir.join(rec.digest.to_string()));
        assert_eq!(std::fs::read(&got.path).unwrap(), bytes, "{kind}: cached bytes");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&got.path).unwrap().permissions().mode() & 0o777,
            0o555
        );
        assert_eq!(s.registry.stats().object_reads, 1, "{kind}");
        assert_eq!(s.registry.stats().object_bytes_read, bytes.len() as u64, "{kind}");
        for _ in 0..5 {
            assert_eq!(cache.get(&n).await.unwrap(), got);
        }
        let st = cache.stats();
        assert_eq!((st.fetches, st.hits, st.gets), (1, 5, 6), "{kind}: {st:?}");
        assert_eq!(s.registry.stats().object_reads, 1, "{kind}: hits read no object");
        assert_eq!(s.registry.stats().record_reads, 6, "{kind}");
        assert_eq!(cache.lookup(&rec.digest), Some(got.path.clone()));

        // The cached file is the proc: it runs.
        let out = std::process::Command::new(&got.path).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), HELLO, "{kind}");

        // With a record TTL, a hit within it asks the store nothing.
        let cache2 = s.cache(&io, RECORD_TTL_DEFAULT);
        let before = s.registry.stats();
        cache2.get(&n).await.unwrap();
        cache2.get(&n).await.unwrap();
        let after = s.registry.stats();
        assert_eq!(after.record_reads - before.record_reads, 1, "{kind}");
        assert_eq!(
            after.object_reads, before.object_reads,
            "{kind}: a new cache over a filled dir fetches nothing"
        );
        // ... but re-hashes the file it did not write, once.
        assert_eq!(cache2.stats().verifications, 1, "{kind}");
        assert_eq!(cache2.stats().hits, 2, "{kind}");
    }
}

#[tokio::test]
async fn sixteen_concurrent_fetches_one_store_read() {
    for (kind, io) in io_variants() {
        let s = setup();
        let n = name("hello@v1");
        let rec = s.registry.put(&n, hello_bytes()).await.unwrap();
        let cache = s.cache(&io, RECORD_TTL_DEFAULT);
        let gets = (0..16).map(|_| {
            let cache = cache.clone();
            let n = n.clone();
            tokio::spawn(async move { cache.get(&n).await })
        });
        let results = futures::future::join_all(gets).await;
        for r in results {
            assert_eq!(r.unwrap().unwrap().digest, rec.digest, "{kind}");
        }
        let st = s.registry.stats();
        assert_eq!(st.object_reads, 1, "{kind}: {st:?} {:?}", cache.stats());
        assert_eq!(st.record_reads, 1, "{kind}: the record too is read once");
        let cs = cache.stats();
        assert_eq!(cs.fetches, 1, "{kind}: {cs:?}");
        assert_eq!(cs.joined, 15, "{kind}: {cs:?}");
        assert_eq!(files_in(&s.cache_dir), vec![rec.digest.to_string()], "{kind}");
    }
}

/// Flips one byte of a file in place.
fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}

#[tokio::test]
async fn tampered_object_is_refused_and_nothing_is_cached() {
    for (kind, io) in io_variants() {
        let s = setup();
        let n = name("hello@v1");
        let rec = s.registry.put(&n, hello_bytes()).await.unwrap();
        // Past the ELF headers, in the middle: only the digest can tell.
        flip_byte(&s.object(&n), rec.bytes / 2);
        let cache = s.cache(&io, RECORD_TTL_DEFAULT);
        let gets = (0..16).map(|_| cache.get(&n));
        let results = futures::future::join_all(gets).await;
        let first = results[0].as_ref().unwrap_err().to_string();
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert!(matches!(e, BinError::DigestMismatch { .. }), "{kind}: {e}");
            assert_eq!(e.to_string(), first, "{kind}: every waiter gets the one fetch's error");
        }
        assert!(
            first.contains(&rec.digest.to_string()) && first.contains("hello@v1"),
            "{first}"
        );
        assert_eq!(s.registry.stats().object_reads, 1, "{kind}");
        assert_eq!(
            files_in(&s.cache_dir),
            Vec::<String>::new(),
            "{kind}: nothing left in the cache"
        );
        assert_eq!(cache.lookup(&rec.digest), None);

        // A failed fetch is not remembered: after a good put, it works.
        s.registry.put(&n, hello_bytes()).await.unwrap();
        let cache = s.cache(&io, RECORD_TTL_DEFAULT);
        assert_eq!(cache.get(&n).await.unwrap().digest, rec.digest, "{kind}");

        // A longer object than its record: refused as it streams. (Other
        // bytes than v1's, else the cache has them already: trailing bytes
        // keep an ELF valid.)
        let n2 = name("hello@v2");
        let mut v2 = hello_bytes().to_vec();
        v2.extend_from_slice(b"v2");
        s.registry.put(&n2, Bytes::from(v2)).await.unwrap();
        let mut longer = std::fs::read(s.object(&n2)).unwrap();
        longer.extend_from_slice(b"trailing bytes");
        std::fs::write(s.object(&n2), longer).unwrap();
        let e = cache.get(&n2).await.unwrap_err();
        assert!(matches!(e, BinError::SizeMismatch { .. }), "{kind}: {e}");
        assert_eq!(files_in(&s.cache_dir), vec![rec.digest.to_string()], "{kind}");
    }
}

#[tokio::test]
async fn corrupt_cache_file_is_refetched() {
    let (_, io) = io_variants().remove(0);
    let s = setup();
    let n = name("hello");
    let rec = s.registry.put(&n, hello_bytes()).await.unwrap();
    let cache = s.cache(&io, RECORD_TTL_DEFAULT);
    let path = cache.get(&n).await.unwrap().path;
    drop(cache);
    // Corrupt the cached file (as bit rot, or a write behind sigmad's back).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    flip_byte(&path, 1000);
    let cache = s.cache(&io, RECORD_TTL_DEFAULT);
    let got = cache.get(&n).await.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), hello_bytes());
    let st = cache.stats();
    assert_eq!((st.verifications, st.corrupt_removed, st.fetches), (1, 1, 1), "{st:?}");
    assert_eq!(s.registry.stats().object_reads, 2);
    assert_eq!(Digest::of(&std::fs::read(&got.path).unwrap()), rec.digest);
}

#[tokio::test]
async fn too_large_is_refused_with_the_limit() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    // Sparse: the size is checked before a byte is read.
    std::fs::File::create(&big).unwrap().set_len(BIN_BYTES_MAX + 1).unwrap();
    let e = s.registry.put_file(&name("big"), &big).await.unwrap_err();
    assert!(
        matches!(e, BinError::TooLarge { bytes, limit, .. } if bytes == BIN_BYTES_MAX + 1 && limit == BIN_BYTES_MAX),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("268435457") && text.contains("268435456") && text.contains("big@latest"),
        "{text}"
    );

    // A record claiming more than the limit is refused at fetch, before
    // the object is read.
    let n = name("hello");
    s.registry.put(&n, hello_bytes()).await.unwrap();
    let json = std::fs::read_to_string(s.record_file(&n)).unwrap();
    let rec = s.registry.stat(&n).await.unwrap();
    let forged = json.replace(
        &format!("\"bytes\":{}", rec.bytes),
        &format!("\"bytes\":{}", BIN_BYTES_MAX + 1),
    );
    assert_ne!(forged, json);
    std::fs::write(s.record_file(&n), forged).unwrap();
    let (_, io) = io_variants().remove(1);
    let cache = s.cache(&io, RECORD_TTL_DEFAULT);
    let e = cache.get(&n).await.unwrap_err();
    assert!(matches!(e, BinError::TooLarge { .. }), "{e}");
    assert_eq!(s.registry.stats().object_reads, 0);
    assert_eq!(files_in(&s.cache_dir), Vec::<String>::new());
}

#[tokio::test]
async fn non_elf_and_dynamic_elf_are_refused() {
    let s = setup();
    let e = s
        .registry
        .put(&name("script"), Bytes::from_static(b"#!/bin/sh\necho hi\n"))
        .await
        .unwrap_err();
    assert!(matches!(e, BinError::NotStaticElf { .. }), "{e}");
    assert!(
        e.to_string().contains("must be a static executable") && e.to_string().contains("not an ELF"),
        "{e}"
    );

    // /bin/true here is dynamically linked.
    let e = s
        .registry
        .put_file(&name("true"), Path::new("/bin/true"))
        .await
        .unwrap_err();
    assert!(matches!(e, BinError::NotStaticElf { .. }), "{e}");
    assert!(
        e.to_string().contains("PT_INTERP") && e.to_string().contains("static"),
        "{e}"
    );
    let e = s.registry.put(&name("empty"), Bytes::new()).await.unwrap_err();
    assert!(matches!(e, BinError::NotStaticElf { .. }), "{e}");
    assert!(s.registry.list().await.unwrap().is_empty(), "nothing was stored");

    // A dynamic ELF that reached the store some other way (with a record
    // of the right digest) is refused at fetch, and nothing is cached.
    let n = name("sneaky");
    s.registry.put(&n, hello_bytes()).await.unwrap();
    let dynamic = std::fs::read("/bin/true").unwrap();
    std::fs::write(s.object(&n), &dynamic).unwrap();
    let rec = s.registry.stat(&n).await.unwrap();
    let json = std::fs::read_to_string(s.record_file(&n)).unwrap();
    let forged = json
        .replace(
            &format!("\"bytes\":{}", rec.bytes),
            &format!("\"bytes\":{}", dynamic.len()),
        )
        .replace(&rec.digest.to_string(), &Digest::of(&dynamic).to_string());
    std::fs::write(s.record_file(&n), forged).unwrap();
    for (kind, io) in io_variants() {
        let cache = s.cache(&io, RECORD_TTL_DEFAULT);
        let e = cache.get(&n).await.unwrap_err();
        assert!(matches!(e, BinError::NotStaticElf { .. }), "{kind}: {e}");
        assert_eq!(files_in(&s.cache_dir), Vec::<String>::new(), "{kind}");
    }
}

#[tokio::test]
async fn static_elves_are_accepted() {
    let s = setup();
    let rec = s.registry.put_file(&name("hello-rust"), &static_rust()).await.unwrap();
    assert_eq!(rec.bytes, std::fs::metadata(static_rust()).unwrap().len());
    if let Some(c) = static_c() {
        s.registry.put_file(&name("true-c"), &c).await.unwrap();
    }
}

#[tokio::test]
async fn bad_names_are_refused() {
    for bad in ["", "../etc", "a/b", "Hello", "a@", "@v", "x@y@z", ".hidden", "sp ace"] {
        let e = BinName::parse(bad).unwrap_err();
        assert!(matches!(e, BinError::InvalidName { .. }), "{bad:?}: {e}");
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
    let long = format!("{}@v", "x".repeat(65));
    assert!(BinName::parse(&long).unwrap_err().to_string().contains("at most 64"));
}

#[tokio::test]
async fn a_relative_store_directory_is_refused() {
    let e = BinRegistry::open(&StoreConfig::local("relative/dir")).unwrap_err();
    assert!(matches!(e, BinError::Config { .. }), "{e}");
    let e = BinRegistry::open(&StoreConfig::url("s3://")).unwrap_err();
    assert!(e.to_string().contains("no bucket"), "{e}");
}

#[tokio::test]
async fn a_local_store_file_goes_in_as_a_checked_hard_link() {
    use std::os::unix::fs::MetadataExt;
    for (kind, io) in io_variants() {
        let s = setup();
        let n = name("hello");
        let rec = s.registry.put(&n, hello_bytes()).await.unwrap();
        let cache = s.cache(&io, RECORD_TTL_DEFAULT);
        cache.link_local_files(true);
        let got = cache.get(&n).await.unwrap();
        // The cache file is the store's inode: nothing was written.
        let (c, o) = (
            std::fs::metadata(&got.path).unwrap(),
            std::fs::metadata(s.object(&n)).unwrap(),
        );
        assert_eq!((c.dev(), c.ino()), (o.dev(), o.ino()), "{kind}");
        assert_eq!(c.mode() & 0o777, 0o555, "{kind}: read-only and executable");
        assert_eq!(std::fs::read(&got.path).unwrap(), hello_bytes(), "{kind}");
        assert_eq!(files_in(&s.cache_dir), vec![rec.digest.to_string()], "{kind}");
        // It was checked as a copy would be: a tampered store file is
        // refused and leaves nothing in the cache.
        let n2 = name("hello@v2");
        let mut v2 = hello_bytes().to_vec();
        v2.extend_from_slice(b"v2");
        s.registry.put(&n2, Bytes::from(v2)).await.unwrap();
        flip_byte(&s.object(&n2), 1000);
        let e = cache.get(&n2).await.unwrap_err();
        assert!(matches!(e, BinError::DigestMismatch { .. }), "{kind}: {e}");
        assert_eq!(files_in(&s.cache_dir), vec![rec.digest.to_string()], "{kind}");
        // Removing the binary from the store leaves the cached one whole.
        s.registry.remove(&n).await.unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), hello_bytes(), "{kind}");
    }
}

/// A hard-linked file is hashed where it lies, in pieces of
/// `HASH_PIECE_BYTES` spread over the cores: sizes around the pieces'
/// edges give the one-pass digest, and a byte changed in any piece (the
/// first past the ELF headers, a middle one, the last) is caught.
#[tokio::test]
async fn a_linked_file_hashed_in_pieces_matches_and_any_changed_piece_is_caught() {
    use sigma_control::bins::limits::HASH_PIECE_BYTES;
    let piece = HASH_PIECE_BYTES as usize;
    let hello = hello_bytes();
    for (kind, io) in io_variants() {
        let s = setup();
        let cache = s.cache(&io, RECORD_TTL_DEFAULT);
        cache.link_local_files(true);
        let base = hello.len().div_ceil(piece) * piece;
        // Trailing bytes keep an ELF valid.
        for (i, len) in [base - 1, base, base + 1, base + piece + 1024].into_iter().enumerate() {
            let mut bytes = hello.to_vec();
            bytes.extend((bytes.len()..len).map(|j| (j * 7 + i) as u8));
            let n = name(&format!("sized@v{i}"));
            let rec = s.registry.put(&n, Bytes::from(bytes.clone())).await.unwrap();
            assert_eq!(rec.digest, Digest::of(&bytes));
            let got = cache.get(&n).await.unwrap();
            assert_eq!(got.digest, rec.digest, "{kind}: {len} bytes");
            assert_eq!(std::fs::read(&got.path).unwrap(), bytes, "{kind}: {len} bytes");
        }
        for (i, at) in [(piece / 2) as u64, (piece + 7) as u64, (base - 1) as u64]
            .into_iter()
            .enumerate()
        {
            let mut bytes = hello.to_vec();
            bytes.resize(base, 0xa5);
            bytes.extend_from_slice(format!("tampered {i}").as_bytes());
            let n = name(&format!("tampered@v{i}"));
            s.registry.put(&n, Bytes::from(bytes)).await.unwrap();
            flip_byte(&s.object(&n), at);
            let before = files_in(&s.cache_dir);
            let e = cache.get(&n).await.unwrap_err();
            assert!(matches!(e, BinError::DigestMismatch { .. }), "{kind}: byte {at}: {e}");
            assert_eq!(files_in(&s.cache_dir), before, "{kind}: nothing left in the cache");
        }
    }
}

/// A cache write that has answered holds the file no more: the cache
/// renames and execs the file right after its last write, and a writable
/// fd still open on a core's thread makes exec fail with ETXTBSY (seen in
/// sigmabench's cold-start-s3 with two cache-IO cores). Every answered
/// write and hash leaves the caller's `Arc<File>` its only holder.
#[tokio::test]
async fn an_answered_cache_job_holds_its_file_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    for (kind, io) in io_variants() {
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        for i in 0..2000u64 {
            io.write_all_at(file.clone(), i * 8, Bytes::from_static(b"01234567"))
                .await
                .unwrap();
            assert_eq!(
                Arc::strong_count(&file),
                1,
                "{kind}: write {i} answered, its job still holds the file"
            );
            if i % 100 == 0 {
                let piece = io
                    .hash_piece(file.clone(), 0, 8, sigma_control::bins::digest::PieceHasher::whole(), 8)
                    .await
                    .unwrap();
                assert_eq!(piece.head, b"01234567", "{kind}");
                assert_eq!(
                    Arc::strong_count(&file),
                    1,
                    "{kind}: hash {i} answered, its job still holds the file"
                );
            }
        }
    }
}
