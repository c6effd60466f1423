//! The etcd store against a real etcd (started per test by
//! `sigma_tests::etcd`): the namespace conformance suite, and the store's own
//! semantics — get/scan/txn, watches, leases and deadlines.

use bytes::Bytes;
use sigma_control::ns::etcd::{EtcdStore, REQUEST_TIMEOUT, SCAN_PAGE_KEYS, TXN_OPS_MAX};
use sigma_control::ns::store::{Change, Compare, Record, WatchEvent, WatchReceiver, WATCH_EVENTS_MAX};
use sigma_control::ns::{Namespace, NsError, Store, FILE_BYTES_MAX};
use sigma_tests::etcd::EtcdServer;
use std::time::{Duration, Instant};

const PREFIX: &str = "/sigma/ns/";

async fn store(etcd: &EtcdServer, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&etcd.endpoints(), prefix)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\netcd log:\n{}", etcd.log()))
}

fn put(key: &str, value: &str) -> Change {
    Change::Put {
        key: key.to_string(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease: None,
    }
}

fn put_leased(key: &str, lease: u64) -> Change {
    Change::Put {
        key: key.to_string(),
        value: Bytes::from_static(b"e"),
        lease: Some(lease),
    }
}

fn del(key: &str) -> Change {
    Change::Delete { key: key.to_string() }
}

fn absent(key: &str) -> Compare {
    Compare::Absent(key.to_string())
}

/// An event as text: `put KEY=VALUE` or `delete KEY` (a put's version must be positive).
fn shape(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Put(k, r) => {
            assert!(r.version > 0, "{e:?}");
            format!("put {k}={}", String::from_utf8_lossy(&r.value))
        }
        WatchEvent::Delete(k) => format!("delete {k}"),
    }
}

async fn value(s: &EtcdStore, key: &str) -> Option<Bytes> {
    s.get(key).await.unwrap().map(|r| r.value)
}

/// The next event, or a failure after `within`.
async fn next_event(rx: &mut WatchReceiver, within: Duration) -> WatchEvent {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("watch closed"),
        Err(_) => panic!("no watch event within {within:?}"),
    }
}

#[tokio::test]
async fn conformance() {
    let etcd = EtcdServer::start_or_panic();
    let ns = Namespace::new(store(&etcd, PREFIX).await, "m0").await.unwrap();
    sigma_control::ns::conformance::run_all(&ns).await;
}

/// etcd frozen (SIGSTOP) while a write is in flight: the write fails as
/// outcome-unknown, and after SIGCONT it turns out applied.
#[tokio::test]
async fn conformance_a_frozen_etcd_gives_outcome_unknown() {
    let etcd = EtcdServer::start_or_panic();
    let s = EtcdStore::connect_with_timeout(&etcd.endpoints(), PREFIX, Duration::from_secs(1))
        .await
        .unwrap();
    let ns = Namespace::new(s, "m0").await.unwrap();
    sigma_control::ns::conformance::a_change_without_an_answer_is_outcome_unknown(
        &ns,
        || etcd.freeze(),
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn get_and_scan_stay_under_the_prefix_in_key_order() {
    let etcd = EtcdServer::start_or_panic();
    let s = store(&etcd, PREFIX).await;
    let raw = store(&etcd, "").await;
    let other = store(&etcd, "/other/").await;

    assert_eq!(s.get("a").await.unwrap(), None);
    assert!(s
        .txn(&[], &[put("a", "1"), put("b/x", "2"), put("b/y", "3"), put("c", "4")])
        .await
        .unwrap());
    assert_eq!(value(&s, "a").await.as_deref(), Some(&b"1"[..]));
    // Stored under the prefix, invisible to another prefix.
    assert_eq!(value(&raw, "/sigma/ns/a").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(other.get("a").await.unwrap(), None);
    assert!(other.scan("").await.unwrap().is_empty());
    // A key just past the prefix is not in a scan of the whole store.
    assert!(raw
        .txn(&[], &[put("/sigma/ns0", "outside"), put("/sigma/ns", "outside")])
        .await
        .unwrap());

    let keys = |v: Vec<(String, Record)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(s.scan("").await.unwrap()), ["a", "b/x", "b/y", "c"]);
    assert_eq!(keys(s.scan("b/").await.unwrap()), ["b/x", "b/y"]);
    assert!(s.scan("nothing").await.unwrap().is_empty());

    // Every record carries the version get reports.
    for (k, r) in s.scan("").await.unwrap() {
        assert_eq!(s.get(&k).await.unwrap(), Some(r));
    }

    // Many keys: several scan pages, still sorted and complete.
    let n = SCAN_PAGE_KEYS * 5 + 7;
    let mut want: Vec<String> = (0..n).map(|i| format!("many/{i:05}")).collect();
    for chunk in want.chunks(TXN_OPS_MAX) {
        let changes: Vec<Change> = chunk.iter().map(|k| put(k, k)).collect();
        assert!(s.txn(&[], &changes).await.unwrap());
    }
    want.sort();
    let got = s.scan("many/").await.unwrap();
    assert_eq!(got.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want);
    assert!(got.iter().all(|(k, r)| r.value == k.as_bytes()));

    // Large values: more than gRPC's default 4 MiB message in one scan.
    let big = Bytes::from(vec![7u8; FILE_BYTES_MAX]);
    for i in 0..12 {
        let change = Change::Put {
            key: format!("big/{i:02}"),
            value: big.clone(),
            lease: None,
        };
        assert!(s.txn(&[], &[change]).await.unwrap());
    }
    let got = s.scan("big/").await.unwrap();
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|(_, r)| r.value == big));
}

#[tokio::test]
async fn txn_compares_versions_and_applies_all_or_nothing() {
    let etcd = EtcdServer::start_or_panic();
    let s = store(&etcd, PREFIX).await;

    // Absent.
    assert!(s.txn(&[absent("k")], &[put("k", "1")]).await.unwrap());
    assert!(!s.txn(&[absent("k")], &[put("k", "2")]).await.unwrap());
    assert_eq!(value(&s, "k").await.as_deref(), Some(&b"1"[..]));

    // Version: bumps on every write; a stale version fails.
    let v1 = s.get("k").await.unwrap().unwrap().version;
    assert!(v1 > 0);
    assert!(s
        .txn(&[Compare::Version("k".into(), v1)], &[put("k", "2")])
        .await
        .unwrap());
    let v2 = s.get("k").await.unwrap().unwrap().version;
    assert!(v2 > v1, "a write bumps the version");
    assert!(!s
        .txn(&[Compare::Version("k".into(), v1)], &[put("k", "3")])
        .await
        .unwrap());
    assert!(!s
        .txn(&[Compare::Version("nokey".into(), v2)], &[put("nokey", "x")])
        .await
        .unwrap());
    assert!(!s
        .txn(&[Compare::Version("k".into(), u64::MAX)], &[put("k", "x")])
        .await
        .unwrap());
    assert_eq!(value(&s, "k").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get("nokey").await.unwrap(), None);

    // Delete and re-create: the old version does not match again (no ABA).
    assert!(s.txn(&[], &[del("k")]).await.unwrap());
    assert!(s.txn(&[absent("k")], &[put("k", "again")]).await.unwrap());
    let v3 = s.get("k").await.unwrap().unwrap().version;
    assert!(v3 > v2);
    assert!(!s.txn(&[Compare::Version("k".into(), v2)], &[del("k")]).await.unwrap());

    // Atomic put + delete over several keys: nothing applies if one compare fails.
    assert!(s.txn(&[], &[put("a", "1"), put("b", "1")]).await.unwrap());
    let va = s.get("a").await.unwrap().unwrap().version;
    let failed = s
        .txn(
            &[Compare::Version("a".into(), va), absent("b")],
            &[del("a"), put("c", "1"), put("d", "1")],
        )
        .await;
    assert_eq!(failed, Ok(false));
    assert!(s.get("a").await.unwrap().is_some());
    assert_eq!(s.get("c").await.unwrap(), None);
    assert_eq!(s.get("d").await.unwrap(), None);
    assert!(s
        .txn(
            &[Compare::Version("a".into(), va), absent("c")],
            &[del("a"), put("c", "1"), put("d", "1")]
        )
        .await
        .unwrap());
    assert_eq!(s.get("a").await.unwrap(), None);
    let (vc, vd) = (
        s.get("c").await.unwrap().unwrap().version,
        s.get("d").await.unwrap().unwrap().version,
    );
    assert_eq!(vc, vd, "one transaction, one revision");

    // The same key twice: the last change decides (etcd itself refuses duplicates).
    assert!(s.txn(&[], &[put("dup", "1"), del("dup")]).await.unwrap());
    assert_eq!(s.get("dup").await.unwrap(), None);
    assert!(s
        .txn(&[], &[del("dup"), put("dup", "2"), put("dup", "3")])
        .await
        .unwrap());
    assert_eq!(value(&s, "dup").await.as_deref(), Some(&b"3"[..]));

    // Deleting an absent key is no error; empty transactions succeed.
    assert!(s.txn(&[], &[del("never")]).await.unwrap());
    assert!(s.txn(&[], &[]).await.unwrap());

    // Beyond etcd's Txn bound: a clear error, nothing applied.
    let changes: Vec<Change> = (0..=TXN_OPS_MAX).map(|i| put(&format!("over/{i}"), "x")).collect();
    assert!(matches!(s.txn(&[], &changes).await, Err(NsError::TooLarge { max, .. }) if max == TXN_OPS_MAX));
    assert!(s.scan("over/").await.unwrap().is_empty());
}

#[tokio::test]
async fn watch_reports_puts_deletes_and_lease_expiry_under_its_prefix() {
    let etcd = EtcdServer::start_or_panic();
    let s = store(&etcd, PREFIX).await;
    let raw = store(&etcd, "").await;
    let mut rx = s.watch("dir/").await.unwrap();
    let second = Duration::from_secs(5);

    assert!(s.txn(&[], &[put("elsewhere", "x"), put("dir/a", "1")]).await.unwrap());
    assert_eq!(shape(&next_event(&mut rx, second).await), "put dir/a=1");
    assert!(s.txn(&[], &[put("dir/a", "2")]).await.unwrap());
    assert_eq!(shape(&next_event(&mut rx, second).await), "put dir/a=2");
    assert!(s.txn(&[], &[del("dir/a"), put("dir/b", "1")]).await.unwrap());
    let mut both = vec![
        shape(&next_event(&mut rx, second).await),
        shape(&next_event(&mut rx, second).await),
    ];
    both.sort();
    assert_eq!(both, ["delete dir/a", "put dir/b=1"]);
    // Another client's write under the same full key is seen; outside the prefix it is not.
    assert!(raw
        .txn(&[], &[put("/sigma/ns/dir/c", "1"), put("/other/dir/d", "1")])
        .await
        .unwrap());
    assert_eq!(shape(&next_event(&mut rx, second).await), "put dir/c=1");

    // A lease that ends deletes its keys, and the watch says so.
    let lease = s.lease_grant(Duration::from_secs(1)).await.unwrap();
    assert!(s.txn(&[], &[put_leased("dir/eph", lease)]).await.unwrap());
    assert_eq!(shape(&next_event(&mut rx, second).await), "put dir/eph=e");
    let t = Instant::now();
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(10)).await,
        WatchEvent::Delete("dir/eph".into())
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "expired after {:?}, TTL 1 s",
        t.elapsed()
    );
    assert_eq!(s.get("dir/eph").await.unwrap(), None);

    // Nothing else arrived (the writes outside "dir/" above).
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn a_lagging_watcher_sees_its_channel_close() {
    let etcd = EtcdServer::start_or_panic();
    let s = store(&etcd, PREFIX).await;
    let mut rx = s.watch("lag/").await.unwrap();
    let mut written = 0;
    let mut round = 0;
    while written <= WATCH_EVENTS_MAX + TXN_OPS_MAX {
        let changes: Vec<Change> = (0..TXN_OPS_MAX)
            .map(|i| put(&format!("lag/{i}"), &round.to_string()))
            .collect();
        assert!(s.txn(&[], &changes).await.unwrap());
        written += TXN_OPS_MAX;
        round += 1;
    }
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break,
            Err(_) => panic!("the watch neither closed nor delivered within 10 s ({received} events so far)"),
        }
    }
    assert!(received <= WATCH_EVENTS_MAX, "{received} events");
    assert!(received < written);
}

#[tokio::test]
async fn leases_keep_alive_and_revoke() {
    let etcd = EtcdServer::start_or_panic();
    let s = store(&etcd, PREFIX).await;

    // Kept alive past its TTL, the key stays; left alone, it goes.
    let lease = s.lease_grant(Duration::from_millis(1)).await.unwrap();
    assert_ne!(lease, 0);
    assert!(s.txn(&[], &[put_leased("live", lease)]).await.unwrap());
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        s.lease_keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.get("live").await.unwrap().is_some(),
        "kept alive for 2.5 s with a 1 s TTL"
    );
    let t = Instant::now();
    while s.get("live").await.unwrap().is_some() {
        assert!(t.elapsed() < Duration::from_secs(10), "the lease did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.lease_keep_alive(lease).await, Err(NsError::LeaseExpired(lease)));

    // Revoke removes the keys at once.
    let lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert!(s
        .txn(
            &[],
            &[put_leased("r/1", lease), put_leased("r/2", lease), put("r/keep", "x")]
        )
        .await
        .unwrap());
    s.lease_revoke(lease).await.unwrap();
    let left: Vec<String> = s.scan("r/").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, ["r/keep"]);
    assert_eq!(s.lease_keep_alive(lease).await, Err(NsError::LeaseExpired(lease)));
    assert_eq!(s.lease_revoke(lease).await, Err(NsError::LeaseExpired(lease)));
    assert_eq!(
        s.txn(&[], &[put_leased("r/3", lease)]).await,
        Err(NsError::LeaseExpired(lease))
    );
    assert_eq!(s.get("r/3").await.unwrap(), None);

    // Ids etcd cannot have.
    assert_eq!(s.lease_keep_alive(u64::MAX).await, Err(NsError::LeaseExpired(u64::MAX)));
    assert_eq!(
        s.txn(&[], &[put_leased("r/4", u64::MAX)]).await,
        Err(NsError::LeaseExpired(u64::MAX))
    );
}

#[tokio::test]
async fn an_unreachable_etcd_fails_within_the_deadline() {
    // Nobody listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let t = Instant::now();
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint), PREFIX)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(took < REQUEST_TIMEOUT + Duration::from_secs(2), "took {took:?}");
    match err {
        NsError::Store(msg) => assert!(msg.contains(&endpoint) && msg.contains("connect"), "{msg}"),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn a_silent_etcd_fails_at_the_deadline() {
    // A socket that completes TCP handshakes (the kernel's backlog) but never
    // answers: a hung or blackholed etcd.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = silent.local_addr().unwrap().to_string();
    let t = Instant::now();
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint), PREFIX)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= REQUEST_TIMEOUT && took < REQUEST_TIMEOUT + Duration::from_secs(2),
        "took {took:?}"
    );
    match err {
        NsError::Store(msg) => assert!(msg.contains(&endpoint) && msg.contains("no answer within"), "{msg}"),
        e => panic!("{e:?}"),
    }
    drop(silent);
}

#[tokio::test]
async fn calls_fail_within_the_deadline_and_watches_close_when_etcd_dies() {
    let mut etcd = EtcdServer::start_or_panic();
    let timeout = Duration::from_secs(1);
    let s = EtcdStore::connect_with_timeout(&etcd.endpoints(), PREFIX, timeout)
        .await
        .unwrap();
    let mut rx = s.watch("").await.unwrap();
    assert!(s.txn(&[], &[put("k", "v")]).await.unwrap());
    assert_eq!(shape(&next_event(&mut rx, Duration::from_secs(5)).await), "put k=v");
    let lease = s.lease_grant(Duration::from_secs(30)).await.unwrap();
    etcd.kill();

    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(None) => {}
        Ok(Some(ev)) => panic!("event after etcd died: {ev:?}"),
        Err(_) => panic!("the watch stayed open 30 s after etcd died"),
    }
    let bound = timeout + Duration::from_secs(1);
    let calls: [(&str, Result<(), NsError>); 5] = [
        ("get", async { s.get("k").await.map(drop) }.await),
        ("scan", async { s.scan("").await.map(drop) }.await),
        ("txn", async { s.txn(&[], &[put("k", "w")]).await.map(drop) }.await),
        ("lease keep-alive", async { s.lease_keep_alive(lease).await }.await),
        ("watch", async { s.watch("").await.map(drop) }.await),
    ];
    for (op, result) in calls {
        match result {
            Err(NsError::Store(msg)) => assert!(msg.contains(&etcd.endpoint) && msg.contains(op), "{op}: {msg}"),
            other => panic!("{op}: {other:?}"),
        }
    }
    let t = Instant::now();
    assert!(s.get("k").await.is_err());
    assert!(t.elapsed() < bound, "took {:?}", t.elapsed());
}

/// Waits for `f` on a data-plane core, at most 10 s.
async fn on_core<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let within = Duration::from_secs(10);
    match sigma_dataplane::timeout(within, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {within:?}"),
    }
}

/// No tokio runtime here: the store is driven by a data-plane core, whose
/// own timer bounds each wait.
#[test]
fn the_store_runs_on_a_data_plane_core() {
    let etcd = EtcdServer::start_or_panic();
    let core = sigma_dataplane::Core::builder().build().expect("a data-plane core");
    core.block_on(async {
        let s = on_core("connect", EtcdStore::connect(&etcd.endpoints(), PREFIX))
            .await
            .unwrap();
        let mut rx = on_core("watch", s.watch("")).await.unwrap();
        let lease = on_core("lease grant", s.lease_grant(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(
            on_core("txn", s.txn(&[absent("k")], &[put_leased("k", lease)])).await,
            Ok(true)
        );
        assert_eq!(
            on_core("watch event", rx.recv()).await.as_ref().map(shape).as_deref(),
            Some("put k=e")
        );
        let got = on_core("get", s.get("k")).await.unwrap();
        assert_eq!(got.map(|r| r.value), Some(Bytes::from_static(b"e")));
        on_core("lease revoke", s.lease_revoke(lease)).await.unwrap();
        assert_eq!(
            on_core("watch event", rx.recv()).await,
            Some(WatchEvent::Delete("k".into()))
        );
        drop(s);
        assert_eq!(
            on_core("watch close", rx.recv()).await,
            None,
            "the watch closes with the last clone of the store"
        );
    });
}

/// A TCP proxy in front of etcd that can hold etcd's answers back: a
/// request gets through and applies, its answer does not (yet).
struct HoldingProxy {
    addr: std::net::SocketAddr,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HoldingProxy {
    fn start(upstream: &str) -> HoldingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let upstream: std::net::SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = hold.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    return;
                };
                let pump = |mut from: std::net::TcpStream, mut to: std::net::TcpStream, hold: Option<_>| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if let Some(hold) = &hold {
                                let hold: &std::sync::Arc<std::sync::atomic::AtomicBool> = hold;
                                while hold.load(Ordering::SeqCst) {
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                };
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), None);
                pump(server, client, Some(h.clone()));
            }
        });
        HoldingProxy { addr, hold }
    }
}

/// A transaction whose answer is lost is retried; when the retry finds the
/// transaction's own earlier attempt applied (its compares fail because it
/// applied), the store reports success, not a conflict.
#[tokio::test]
async fn a_txn_whose_answer_was_lost_is_retried_and_recognized_as_applied() {
    let etcd = EtcdServer::start_or_panic();
    let proxy = HoldingProxy::start(&etcd.endpoints()[0]);
    // A 2 s deadline: attempts of 500 ms.
    let s = EtcdStore::connect_with_timeout(&[format!("http://{}", proxy.addr)], PREFIX, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(s.txn(&[absent("warm")], &[put("warm", "w")]).await, Ok(true));

    proxy.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let hold = proxy.hold.clone();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        hold.store(false, std::sync::atomic::Ordering::SeqCst);
    });
    let started = Instant::now();
    let result = s.txn(&[absent("k")], &[put("k", "mine")]).await;
    release.join().unwrap();
    assert_eq!(result, Ok(true), "after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the first answer was held back"
    );
    assert_eq!(value(&s, "k").await, Some(Bytes::from_static(b"mine")));
    // Without an unknown attempt, failed compares are just that.
    assert_eq!(s.txn(&[absent("k")], &[put("k", "mine")]).await, Ok(false));
}
