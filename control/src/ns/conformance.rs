//! The conformance suite every [`Store`] must pass through the namespace
//! API: run by the tests of each back end against a real instance.
#![doc(hidden)]

use super::entry::EntryKind;
use super::service::{Namespace, Opened, ROOT_REALM};
use super::{NsError, Store};
use bytes::Bytes;
use std::future::Future;
use std::time::Duration;

/// `f` with a deadline (tokio's timer), as `TimedOut` if it passes (what
/// sigmad reports for a watch that waited its whole time).
async fn within<T>(d: Duration, f: impl Future<Output = Result<T, NsError>>) -> Result<T, NsError> {
    tokio::time::timeout(d, f).await.unwrap_or_else(|_| {
        Err(NsError::TimedOut {
            path: String::new(),
            waited: d,
        })
    })
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Runs every check against `ns`. Each check uses its own realms, so one
/// namespace serves them all. Panics (test failure) on the first violation.
pub async fn run_all<S: Store + Clone>(ns: &Namespace<S>) {
    realms(ns).await;
    stale_hints(ns).await;
    big_realm(ns).await;
    tree(ns).await;
    rename_and_cas(ns).await;
    resolve(ns).await;
    leases(ns).await;
    watches(ns).await;
    isolation(ns).await;
    root_view(ns).await;
}

/// A change the store sent but got no answer for, because the store hung
/// (`freeze` makes it hang; dropping what it returns makes it answer
/// again), fails with [`NsError::OutcomeUnknown`] — and that is the truth:
/// once the store answers again, the change turns out applied. `ns`'s store
/// must give up on a request well within `settle` (a short store timeout).
pub async fn a_change_without_an_answer_is_outcome_unknown<S: Store, G>(
    ns: &Namespace<S>,
    freeze: impl FnOnce() -> G,
    settle: Duration,
) {
    ns.create_realm("c-frozen").await.unwrap();
    let r = ns.realm("c-frozen").await.unwrap();
    // The namespace remembers the file's version from its creation, so the
    // write below is one compare-and-swap, sent without reading first.
    r.create("/f", 0o644, EntryKind::File, b("before"), None).await.unwrap();
    let frozen = freeze();
    let result = within(settle, r.write("/f", b("after"), None)).await;
    drop(frozen);
    match result {
        Err(NsError::OutcomeUnknown(message)) => {
            assert!(message.contains("txn"), "{message}");
        }
        other => panic!("a write to a hung store: {other:?}, not OutcomeUnknown"),
    }
    // The store answers again; the write had reached it. A read right after
    // the thaw may come before the store gets to the write: the store owes
    // no order between requests that were in flight together.
    let deadline = std::time::Instant::now() + settle;
    loop {
        let seen = r.read("/f").await;
        if seen.as_ref().is_ok_and(|v| v == &b("after")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the write reported as outcome-unknown was not applied within {settle:?}: /f gives {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn root_view<S: Store>(ns: &Namespace<S>) {
    let root = ns.realm(ROOT_REALM).await.unwrap();
    let _ = root
        .create("/c-shared", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await;
    let _ = root.mount("/c-shared/db", b("tcp:shared"), None).await;
    let _ = root
        .create("/c-shared/motd", 0o644, EntryKind::File, b("hi"), None)
        .await;
    ns.create_realm("c-view").await.unwrap();
    let r = ns.realm("c-view").await.unwrap();
    // Every realm reads the root realm under /~root ...
    assert_eq!(r.read("/~root/c-shared/motd").await.unwrap(), b("hi"));
    let names: Vec<String> = r
        .readdir("/~root/c-shared")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["db", "motd"]);
    assert_eq!(
        r.resolve("/~root/c-shared/db/x").await.unwrap().endpoint,
        b("tcp:shared")
    );
    assert_eq!(r.stat("/~root/c-shared/motd").await.unwrap().len, 2);
    // ... and changes nothing there.
    let denied = |e: Result<_, NsError>| matches!(e, Err(NsError::Denied(_)));
    assert!(denied(r.write("/~root/c-shared/motd", b("mine"), None).await.map(drop)));
    assert!(denied(
        r.create("/~root/c-shared/x", 0o644, EntryKind::File, Bytes::new(), None)
            .await
            .map(drop)
    ));
    assert!(denied(r.remove("/~root/c-shared/motd").await));
    assert!(denied(r.rename("/~root/c-shared/motd", "/stolen").await));
    assert!(denied(r.mount("/~root/c-shared/ep", b("x"), None).await.map(drop)));
    assert_eq!(root.read("/c-shared/motd").await.unwrap(), b("hi"));
    // A realm's own names never reach the root realm's by accident.
    assert!(matches!(r.read("/c-shared/motd").await, Err(NsError::NotFound { .. })));
    ns.remove_realm("c-view").await.unwrap();
}

/// More entries than one etcd transaction may name (128): removing the
/// realm still takes them all, and leaves a realm whose name extends it alone.
async fn big_realm<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-big").await.unwrap();
    ns.create_realm("c-big2").await.unwrap();
    let r = ns.realm("c-big").await.unwrap();
    r.create("/d", 0o755, EntryKind::Dir, Bytes::new(), None).await.unwrap();
    for i in 0..300 {
        r.create(&format!("/d/f{i}"), 0o644, EntryKind::File, b("x"), None)
            .await
            .unwrap();
    }
    assert!(matches!(r.remove("/d").await, Err(NsError::NotEmpty { .. })));
    let other = ns.realm("c-big2").await.unwrap();
    other
        .create("/keep", 0o644, EntryKind::File, b("kept"), None)
        .await
        .unwrap();
    ns.remove_realm("c-big").await.unwrap();
    assert!(matches!(r.stat("/d/f7").await, Err(NsError::UnknownRealm(_))));
    assert!(!ns.realms().await.unwrap().contains(&"c-big".to_string()));
    assert_eq!(other.read("/keep").await.unwrap(), b("kept"));
    // The name is free again, with an empty root.
    ns.create_realm("c-big").await.unwrap();
    assert!(r.readdir("/").await.unwrap().is_empty());
    ns.remove_realm("c-big").await.unwrap();
    ns.remove_realm("c-big2").await.unwrap();
}

/// Two namespaces on one store (two sigmads on one etcd): each one's
/// remembered versions go stale when the other changes things, and every
/// call still does the right thing.
async fn stale_hints<S: Store + Clone>(ns: &Namespace<S>) {
    let other_ns = Namespace::new(ns.store().clone(), "other").await.unwrap();
    ns.create_realm("c-hints").await.unwrap();
    let (me, other) = (
        ns.realm("c-hints").await.unwrap(),
        other_ns.realm("c-hints").await.unwrap(),
    );
    me.create("/d", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    me.create("/d/f", 0o600, EntryKind::File, b("1"), None).await.unwrap();
    // The other side writes: my next write swaps against a stale version,
    // re-reads, and keeps the entry's permission bits.
    other.write("/d/f", b("2"), None).await.unwrap();
    let st = me.write("/d/f", b("3"), None).await.unwrap();
    assert_eq!((st.perm, &other.read("/d/f").await.unwrap()[..]), (0o600, &b"3"[..]));
    // A compare-and-swap against the version I saw loses to the other side.
    let seen = me.stat("/d/f").await.unwrap().version;
    other.write("/d/f", b("4"), None).await.unwrap();
    assert!(matches!(
        me.write("/d/f", b("5"), Some(seen)).await,
        Err(NsError::Conflict { .. })
    ));
    // The other side turns the file into a directory: my write says so.
    other.remove("/d/f").await.unwrap();
    other
        .create("/d/f", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    assert!(matches!(
        me.write("/d/f", b("6"), None).await,
        Err(NsError::IsDir { .. })
    ));
    // The other side replaces my parent directory: my create under it still works ...
    other.remove("/d/f").await.unwrap();
    other.remove("/d").await.unwrap();
    other
        .create("/d", 0o700, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    me.create("/d/g", 0o644, EntryKind::File, b("g"), None).await.unwrap();
    assert_eq!(other.read("/d/g").await.unwrap(), b("g"));
    // ... and when the parent is gone, it says so.
    other.remove("/d/g").await.unwrap();
    other.remove("/d").await.unwrap();
    assert!(matches!(
        me.create("/d/h", 0o644, EntryKind::File, Bytes::new(), None).await,
        Err(NsError::NotFound { .. })
    ));
    // Removing what the other side already removed and recreated removes the new one.
    me.create("/x", 0o644, EntryKind::File, b("x1"), None).await.unwrap();
    other.remove("/x").await.unwrap();
    other.create("/x", 0o644, EntryKind::File, b("x2"), None).await.unwrap();
    me.remove("/x").await.unwrap();
    assert!(matches!(other.stat("/x").await, Err(NsError::NotFound { .. })));
    assert!(matches!(me.remove("/x").await, Err(NsError::NotFound { .. })));
    ns.remove_realm("c-hints").await.unwrap();
}

async fn realms<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-realms").await.unwrap();
    assert_eq!(
        ns.create_realm("c-realms").await,
        Err(NsError::RealmExists("c-realms".into()))
    );
    assert!(matches!(
        ns.create_realm("Bad Name").await,
        Err(NsError::InvalidRealm(_))
    ));
    let realms = ns.realms().await.unwrap();
    assert!(
        realms.contains(&"c-realms".to_string()) && realms.contains(&ROOT_REALM.to_string()),
        "{realms:?}"
    );
    let missing = ns.realm("c-nosuch").await.unwrap();
    assert!(matches!(missing.stat("/").await, Err(NsError::UnknownRealm(_))));
    assert!(matches!(
        missing.create("/x", 0o644, EntryKind::File, Bytes::new(), None).await,
        Err(NsError::UnknownRealm(_))
    ));
    assert!(matches!(missing.read("/x").await, Err(NsError::UnknownRealm(_))));
    ns.remove_realm("c-realms").await.unwrap();
    let gone = ns.realm("c-realms").await.unwrap();
    assert!(matches!(gone.readdir("/").await, Err(NsError::UnknownRealm(_))));
    assert!(matches!(ns.realm("Bad!").await, Err(NsError::InvalidRealm(_))));
    assert!(matches!(ns.remove_realm(ROOT_REALM).await, Err(NsError::Denied(_))));
}

async fn tree<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-tree").await.unwrap();
    let r = ns.realm("c-tree").await.unwrap();
    r.create("/d", 0o755, EntryKind::Dir, Bytes::new(), None).await.unwrap();
    let st = r
        .create("/d/f", 0o644, EntryKind::File, b("hello"), None)
        .await
        .unwrap();
    assert_eq!((st.name.as_str(), st.kind, st.len), ("f", EntryKind::File, 5));
    assert_eq!(r.read("/d/f").await.unwrap(), b("hello"));
    assert!(matches!(
        r.create("/d/f", 0o644, EntryKind::File, Bytes::new(), None).await,
        Err(NsError::Exists { .. })
    ));
    assert!(matches!(
        r.create("/nope/f", 0o644, EntryKind::File, Bytes::new(), None).await,
        Err(NsError::NotFound { .. })
    ));
    assert!(matches!(
        r.create("/d/f/g", 0o644, EntryKind::File, Bytes::new(), None).await,
        Err(NsError::NotDir { .. })
    ));
    assert!(matches!(r.read("/d").await, Err(NsError::IsDir { .. })));
    assert!(matches!(r.read("/d/none").await, Err(NsError::NotFound { .. })));
    let big = Bytes::from(vec![0u8; super::FILE_BYTES_MAX + 1]);
    assert!(matches!(
        r.create("/d/big", 0o644, EntryKind::File, big.clone(), None).await,
        Err(NsError::TooLarge { .. })
    ));
    assert!(matches!(
        r.write("/d/f", big, None).await,
        Err(NsError::TooLarge { .. })
    ));
    assert!(matches!(
        r.create("/d/../x", 0o644, EntryKind::File, Bytes::new(), None).await,
        Err(NsError::InvalidPath { .. })
    ));
    // Names that could forge a tool's output or reach a terminal as an
    // escape sequence are refused, whichever call names them.
    for forged in [
        "/d/x\nfile 644 0 v1 forged",
        "/d/\u{1b}[2J",
        "/d/\u{7f}",
        "/d/\u{9b}31m",
    ] {
        let refused = |e: Result<_, NsError>| match e {
            Err(NsError::InvalidPath { why, .. }) => why.contains("control character"),
            _ => false,
        };
        assert!(
            refused(r.create(forged, 0o644, EntryKind::File, b("x"), None).await.map(drop)),
            "{forged:?}"
        );
        assert!(
            refused(
                r.create(forged, 0o755, EntryKind::Dir, Bytes::new(), None)
                    .await
                    .map(drop)
            ),
            "{forged:?}"
        );
        assert!(refused(r.rename("/d/f", forged).await), "{forged:?}");
        assert!(refused(r.stat(forged).await.map(drop)), "{forged:?}");
    }
    assert_eq!(r.readdir("/d").await.unwrap().len(), 1, "nothing was made");
    r.create("/d/sub", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    r.create("/d/sub/deep", 0o644, EntryKind::File, b("x"), None)
        .await
        .unwrap();
    r.create("/da", 0o644, EntryKind::File, b("not a child of /d"), None)
        .await
        .unwrap();
    let names: Vec<String> = r.readdir("/d").await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["f", "sub"], "direct children only, sorted");
    let root: Vec<String> = r.readdir("/").await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(root, ["d", "da"]);
    assert!(matches!(r.readdir("/d/f").await, Err(NsError::NotDir { .. })));
    assert!(matches!(r.remove("/d/sub").await, Err(NsError::NotEmpty { .. })));
    r.remove("/d/sub/deep").await.unwrap();
    r.remove("/d/sub").await.unwrap();
    assert!(matches!(r.remove("/d/sub").await, Err(NsError::NotFound { .. })));
    assert!(matches!(r.remove("/").await, Err(NsError::Denied(_))));
    ns.remove_realm("c-tree").await.unwrap();
}

async fn rename_and_cas<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-rename").await.unwrap();
    let r = ns.realm("c-rename").await.unwrap();
    r.create("/a", 0o644, EntryKind::File, b("1"), None).await.unwrap();
    r.create("/b", 0o644, EntryKind::File, b("2"), None).await.unwrap();
    r.create("/dir", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    assert!(matches!(r.rename("/a", "/b").await, Err(NsError::Exists { .. })));
    r.rename("/a", "/dir/a2").await.unwrap();
    assert!(matches!(r.stat("/a").await, Err(NsError::NotFound { .. })));
    assert_eq!(r.read("/dir/a2").await.unwrap(), b("1"));
    assert!(matches!(r.rename("/dir", "/dir2").await, Err(NsError::NotEmpty { .. })));
    assert!(matches!(
        r.rename("/dir/a2", "/missing/x").await,
        Err(NsError::NotFound { .. })
    ));
    let v = r.stat("/b").await.unwrap().version;
    let st = r.write("/b", b("3"), Some(v)).await.unwrap();
    assert!(st.version > v, "a write bumps the version");
    assert!(
        matches!(r.write("/b", b("4"), Some(v)).await, Err(NsError::Conflict { .. })),
        "stale compare-and-swap"
    );
    assert_eq!(r.read("/b").await.unwrap(), b("3"));
    assert!(matches!(
        r.write("/dir", b("x"), None).await,
        Err(NsError::IsDir { .. })
    ));
    ns.remove_realm("c-rename").await.unwrap();
}

async fn resolve<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-resolve").await.unwrap();
    let r = ns.realm("c-resolve").await.unwrap();
    r.create("/svc", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    r.mount("/svc/db", b("tcp:10.0.0.1:7000"), None).await.unwrap();
    let res = r.resolve("/svc/db/tables/t1").await.unwrap();
    assert_eq!(
        (res.mount.as_str(), &res.endpoint[..], res.rest.clone()),
        (
            "/svc/db",
            &b"tcp:10.0.0.1:7000"[..],
            vec!["tables".to_string(), "t1".to_string()]
        )
    );
    r.create("/kv", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    r.mount("/kv/m1", b("tcp:m1"), None).await.unwrap();
    r.mount("/kv/m2", b("tcp:m2"), None).await.unwrap();
    let any = r.resolve("/kv/~any").await.unwrap();
    assert!(any.endpoint == b("tcp:m1") || any.endpoint == b("tcp:m2"));
    assert!(
        matches!(r.resolve("/kv/~local").await, Err(NsError::Unresolvable { .. })),
        "no replica named after this machine"
    );
    assert!(matches!(r.resolve("/svc").await, Err(NsError::Unresolvable { .. })));
    assert!(matches!(r.resolve("/svc/none").await, Err(NsError::NotFound { .. })));
    assert!(matches!(
        r.write("/svc/db", b("x"), None).await,
        Err(NsError::Denied(_))
    ));
    // open: the entry at a plain path, else the mount on the way.
    r.create("/svc/conf", 0o644, EntryKind::File, b("abc"), None)
        .await
        .unwrap();
    match r.open("/svc/conf").await.unwrap() {
        Opened::Entry(st) => assert_eq!((st.name.as_str(), st.kind, st.len), ("conf", EntryKind::File, 3)),
        other => panic!("open of a file: {other:?}"),
    }
    assert!(matches!(r.open("/svc").await.unwrap(), Opened::Entry(st) if st.kind == EntryKind::Dir));
    match r.open("/svc/db").await.unwrap() {
        Opened::Mount(m) => assert_eq!((m.mount.as_str(), m.rest.len()), ("/svc/db", 0)),
        other => panic!("open of a mount: {other:?}"),
    }
    match r.open("/svc/db/tables/t1").await.unwrap() {
        Opened::Mount(m) => assert_eq!(m.rest, ["tables", "t1"]),
        other => panic!("open below a mount: {other:?}"),
    }
    assert!(matches!(r.open("/kv/~any/x").await.unwrap(), Opened::Mount(m) if m.rest == ["x"]));
    assert!(matches!(r.open("/svc/none").await, Err(NsError::NotFound { .. })));
    assert!(matches!(r.open("/svc/conf/below").await, Err(NsError::NotDir { .. })));
    assert!(matches!(r.open("/a/../b").await, Err(NsError::InvalidPath { .. })));
    ns.remove_realm("c-resolve").await.unwrap();
}

async fn leases<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-lease").await.unwrap();
    let r = ns.realm("c-lease").await.unwrap();
    let lease = r.lease_grant(Duration::from_secs(30)).await.unwrap();
    r.mount("/ep", b("tcp:x"), Some(lease)).await.unwrap();
    assert_eq!(r.stat("/ep").await.unwrap().lease, Some(lease));
    r.lease_keep_alive(lease).await.unwrap();
    r.lease_revoke(lease).await.unwrap();
    assert!(
        matches!(r.stat("/ep").await, Err(NsError::NotFound { .. })),
        "revoking a lease removes its entries"
    );
    assert!(matches!(r.lease_keep_alive(lease).await, Err(NsError::LeaseExpired(_))));
    assert!(matches!(
        r.mount("/ep2", b("x"), Some(lease)).await,
        Err(NsError::LeaseExpired(_))
    ));
    // Expiry without keep-alive.
    let short = r.lease_grant(Duration::from_secs(1)).await.unwrap();
    r.create("/tmp", 0o644, EntryKind::File, b("ephemeral"), Some(short))
        .await
        .unwrap();
    let gone = within(Duration::from_secs(10), r.watch_remove("/tmp")).await;
    assert_eq!(gone, Ok(()), "the entry goes when its lease expires");
    assert!(matches!(r.stat("/tmp").await, Err(NsError::NotFound { .. })));
    ns.remove_realm("c-lease").await.unwrap();
}

async fn watches<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-watch").await.unwrap();
    let r = ns.realm("c-watch").await.unwrap();
    r.create("/dir", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    // Each watch is started, then the change is made, then the watch must end.
    let (opened, ()) = tokio::join!(within(Duration::from_secs(5), r.open_watch("/dir/later")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.create("/dir/later", 0o644, EntryKind::File, b("now"), None)
            .await
            .unwrap();
    });
    // What the watch returns (built from the event) is what a stat says.
    assert_eq!(opened.unwrap(), r.stat("/dir/later").await.unwrap());
    let (changed, ()) = tokio::join!(within(Duration::from_secs(5), r.watch_dir("/dir")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.create("/dir/other", 0o644, EntryKind::File, Bytes::new(), None)
            .await
            .unwrap();
    });
    changed.unwrap();
    let (removed, ()) = tokio::join!(within(Duration::from_secs(5), r.watch_remove("/dir/later")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.remove("/dir/later").await.unwrap();
    });
    removed.unwrap();
    assert!(matches!(
        within(Duration::from_millis(100), r.open_watch("/dir/never")).await,
        Err(NsError::TimedOut { .. })
    ));
    assert!(matches!(
        within(Duration::from_millis(100), r.watch_dir("/missing")).await,
        Err(NsError::NotFound { .. })
    ));
    ns.remove_realm("c-watch").await.unwrap();
}

async fn isolation<S: Store>(ns: &Namespace<S>) {
    ns.create_realm("c-iso-a").await.unwrap();
    ns.create_realm("c-iso-b").await.unwrap();
    let a = ns.realm("c-iso-a").await.unwrap();
    let bb = ns.realm("c-iso-b").await.unwrap();
    bb.create("/secret", 0o600, EntryKind::File, b("b's data"), None)
        .await
        .unwrap();
    bb.create("/svc", 0o755, EntryKind::Dir, Bytes::new(), None)
        .await
        .unwrap();
    bb.mount("/svc/ep", b("tcp:b"), None).await.unwrap();
    let b_lease = bb.lease_grant(Duration::from_secs(30)).await.unwrap();
    // Every call of realm A on realm B's names sees nothing there.
    let nf = |r: Result<_, NsError>| matches!(r, Err(NsError::NotFound { .. }));
    assert!(nf(a.read("/secret").await.map(drop)));
    assert!(nf(a.stat("/secret").await.map(drop)));
    assert!(nf(a.write("/secret", b("mine"), None).await.map(drop)));
    assert!(nf(a.remove("/secret").await));
    assert!(nf(a.rename("/secret", "/stolen").await));
    assert!(nf(a.readdir("/svc").await.map(drop)));
    assert!(nf(a.resolve("/svc/ep").await.map(drop)));
    assert!(nf(a.open("/svc/ep").await.map(drop)));
    assert!(nf(a.open("/svc/ep/rpc").await.map(drop)));
    assert!(nf(a.open("/secret").await.map(drop)));
    assert!(nf(within(Duration::from_millis(50), a.watch_dir("/svc")).await));
    // In A's view B's file does not exist: waiting for its removal ends at once.
    assert_eq!(
        within(Duration::from_millis(50), a.watch_remove("/secret")).await,
        Ok(())
    );
    assert!(
        a.readdir("/").await.unwrap().is_empty(),
        "A's root lists nothing of B's"
    );
    assert!(matches!(
        within(Duration::from_millis(100), a.open_watch("/secret")).await,
        Err(NsError::TimedOut { .. })
    ));
    assert_eq!(
        a.lease_revoke(b_lease).await,
        Err(NsError::LeaseExpired(b_lease)),
        "B's lease looks expired to A"
    );
    assert_eq!(a.lease_keep_alive(b_lease).await, Err(NsError::LeaseExpired(b_lease)));
    assert!(matches!(
        a.mount("/mine", b("x"), Some(b_lease)).await,
        Err(NsError::LeaseExpired(_))
    ));
    // A's own entry at the same path is a different entry.
    a.create("/secret", 0o600, EntryKind::File, b("a's data"), None)
        .await
        .unwrap();
    assert_eq!(bb.read("/secret").await.unwrap(), b("b's data"));
    assert_eq!(a.read("/secret").await.unwrap(), b("a's data"));
    bb.lease_revoke(b_lease).await.unwrap();
    ns.remove_realm("c-iso-a").await.unwrap();
    ns.remove_realm("c-iso-b").await.unwrap();
}
