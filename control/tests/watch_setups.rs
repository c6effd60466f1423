//! Watch setups are bounded (`WATCH_SETUPS_MAX` at once), so that a burst
//! of watches does not queue ahead of every other call (issue #10: 5,000
//! watches set up at once on etcd held a put for up to 0.9 s).
//!
//! A wrapper store makes each watch setup slow and counts how many are in
//! flight: at most `WATCH_SETUPS_MAX` (the assertion that fails without the
//! bound), and every watch is still answered. The put issued behind the
//! burst is a sanity check only: this wrapper's setups never hold the
//! store, so the put would pass them with or without the bound (the etcd
//! figures in `tools/tests/sigmad_load.rs` show the queueing the bound
//! removes).

use sigma_control::ns::embedded::EmbeddedStore;
use sigma_control::ns::store::{Change, Compare, Record, WatchReceiver};
use sigma_control::ns::{EntryKind, LeaseId, Namespace, NsError, Store, WATCH_SETUPS_MAX};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Watches opened at once in the burst.
const BURST: usize = 200;
/// How long one store watch takes to set up in the wrapper.
const SETUP: Duration = Duration::from_millis(2);

/// The embedded store with slow watch setups, counting those in flight.
struct SlowWatches {
    inner: EmbeddedStore,
    in_flight: Cell<usize>,
    in_flight_max: Cell<usize>,
    done: Cell<usize>,
}

impl Store for SlowWatches {
    async fn get(&self, key: &str) -> Result<Option<Record>, NsError> {
        self.inner.get(key).await
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Record)>, NsError> {
        self.inner.scan(prefix).await
    }
    async fn any_under(&self, prefix: &str) -> Result<bool, NsError> {
        self.inner.any_under(prefix).await
    }
    async fn txn_revision(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError> {
        self.inner.txn_revision(compares, changes).await
    }
    async fn watch(&self, prefix: &str) -> Result<WatchReceiver, NsError> {
        self.in_flight.set(self.in_flight.get() + 1);
        self.in_flight_max
            .set(self.in_flight_max.get().max(self.in_flight.get()));
        tokio::time::sleep(SETUP).await;
        let rx = self.inner.watch(prefix).await;
        self.in_flight.set(self.in_flight.get() - 1);
        self.done.set(self.done.get() + 1);
        rx
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, NsError> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), NsError> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), NsError> {
        self.inner.lease_revoke(lease).await
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_watch_setups_is_bounded_and_a_call_does_not_wait_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SlowWatches {
        inner: EmbeddedStore::open(&dir.path().join("ns.redb")).unwrap(),
        in_flight: Cell::new(0),
        in_flight_max: Cell::new(0),
        done: Cell::new(0),
    };
    let ns = Rc::new(Namespace::new(store, "m0").await.unwrap());
    ns.create_realm("w").await.unwrap();
    let local = tokio::task::LocalSet::new();
    let done_at_put = local
        .run_until(async {
            let mut watches = Vec::new();
            for _ in 0..BURST {
                let ns = ns.clone();
                watches.push(tokio::task::spawn_local(async move {
                    ns.realm("w").await.unwrap().open_watch("/ready").await
                }));
            }
            // Let every watch start and queue for its turn.
            tokio::task::yield_now().await;
            let r = ns.realm("w").await.unwrap();
            r.create("/other", 0o644, EntryKind::File, "x".into(), None)
                .await
                .unwrap();
            let done_at_put = ns.store().done.get();
            assert!(
                done_at_put < BURST / 2,
                "a put waited behind {done_at_put} of {BURST} watch setups"
            );
            r.create("/ready", 0o644, EntryKind::File, "go".into(), None)
                .await
                .unwrap();
            for w in watches {
                let stat = tokio::time::timeout(Duration::from_secs(30), w)
                    .await
                    .expect("every watch is answered")
                    .unwrap()
                    .unwrap();
                assert_eq!(stat.name, "ready");
            }
            done_at_put
        })
        .await;
    let max = ns.store().in_flight_max.get();
    eprintln!(
        "{BURST} watches: at most {max} set up at once (bound {WATCH_SETUPS_MAX}), the put done after {done_at_put}"
    );
    assert!(
        max <= WATCH_SETUPS_MAX,
        "{max} watch setups at once, bound {WATCH_SETUPS_MAX}"
    );
    assert!(max >= 2, "setups ran one at a time: the test shows nothing");
}
