//! The namespace on the embedded store: the conformance suite, and
//! durability across `kill -9`.

use sigma_control::ns::embedded::EmbeddedStore;
use sigma_control::ns::{EntryKind, Namespace, NsError};
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("ns.redb")).unwrap();
    let ns = Namespace::new(store, "m0").await.unwrap();
    sigma_control::ns::conformance::run_all(&ns).await;
}

#[tokio::test]
async fn contents_survive_reopen_and_ephemeral_entries_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.redb");
    {
        let ns = Namespace::new(EmbeddedStore::open(&path).unwrap(), "m0").await.unwrap();
        ns.create_realm("t").await.unwrap();
        let r = ns.realm("t").await.unwrap();
        r.create("/keep", 0o644, EntryKind::File, "kept".into(), None)
            .await
            .unwrap();
        let lease = r.lease_grant(Duration::from_secs(60)).await.unwrap();
        r.mount("/ep", "tcp:x".into(), Some(lease)).await.unwrap();
    }
    let ns = Namespace::new(EmbeddedStore::open(&path).unwrap(), "m0").await.unwrap();
    let r = ns.realm("t").await.unwrap();
    assert_eq!(&r.read("/keep").await.unwrap()[..], b"kept");
    assert!(
        matches!(r.stat("/ep").await, Err(NsError::NotFound { .. })),
        "leases do not outlive the store's owner"
    );
}

const CHILD_ENV: &str = "SIGMA_TEST_NS_WRITER";

/// Child: writes files one by one, printing each acknowledged name, until killed.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let ns = Namespace::new(EmbeddedStore::open(std::path::Path::new(&path)).unwrap(), "m0")
            .await
            .unwrap();
        let _ = ns.create_realm("k").await;
        let r = ns.realm("k").await.unwrap();
        for i in 0.. {
            r.create(&format!("/f{i}"), 0o644, EntryKind::File, vec![b'x'; 1000].into(), None)
                .await
                .unwrap();
            println!("acked f{i}");
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    let out = child.wait_with_output().unwrap();
    let acked: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("acked ").map(str::to_string))
        .collect();
    assert!(acked.len() > 5, "the writer acknowledged only {} writes", acked.len());
    let ns = Namespace::new(EmbeddedStore::open(&path).unwrap(), "m0").await.unwrap();
    let r = ns.realm("k").await.unwrap();
    for name in &acked {
        let data = r
            .read(&format!("/{name}"))
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
        assert_eq!(data.len(), 1000, "{name} is half-written");
    }
    // Whatever else is there is whole too (the write in flight may or may not have landed).
    for stat in r.readdir("/").await.unwrap() {
        assert_eq!(stat.len, 1000, "{} is half-written", stat.name);
    }
    eprintln!("{} acknowledged writes, all present after kill -9", acked.len());
}
