//! `etcd-raw`: the same operations straight through `etcd-client` to the suite's etcd, on a
//! tokio current_thread runtime pinned to the client core — what σ's etcd back end adds its
//! namespace logic (and sigmad) on top of.
//!
//! stat = get of the key, read = get, write = put, create-remove = a Txn creating the key if
//! absent, then a delete; watch-notify = a watch on the key (confirmed created), then a put.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, EventType, Txn, TxnOp};

use super::{Addr, Env, NsSpec, NsSystem, Op, OpClock, Outcome, Started};
use crate::systems::payload;

/// etcd through etcd-client, no σ in between.
#[derive(Debug)]
pub struct EtcdRaw;

impl NsSystem for EtcdRaw {
    fn name(&self) -> &'static str {
        "etcd-raw"
    }

    fn note(&self) -> String {
        "etcd-client 0.21 straight to etcd on a tokio current_thread runtime pinned to the client core (stat = get, read = get, write = put, create-remove = txn create-if-absent + delete, watch-notify = watch then put)".to_string()
    }

    fn needs_etcd(&self) -> bool {
        true
    }

    fn start(&self, env: &Env) -> Result<Started> {
        Ok(Started {
            addr: Addr::Etcd {
                endpoints: env.etcd_endpoints()?,
                prefix: env.run_prefix(self.name()),
            },
            sigmad: None,
        })
    }

    fn run(&self, spec: &NsSpec, addr: &Addr) -> Result<Outcome> {
        let Addr::Etcd { endpoints, prefix } = addr else {
            bail!("etcd-raw needs etcd endpoints");
        };
        crate::affinity::pin_current_thread(spec.client_core)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        rt.block_on(client(spec, endpoints, prefix))
    }
}

/// `f` within `t`, its error named after `what`.
async fn within<T, E: std::fmt::Display>(
    what: &str,
    t: Duration,
    f: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(t, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow!("etcd {what}: {e}")),
        Err(_) => Err(anyhow!("etcd {what}: no answer within {t:?}")),
    }
}

/// Gets `key` until the clock says stop, recording each get; with `check`, each must
/// return `value`.
async fn gets(
    client: &mut Client,
    key: &str,
    value: &[u8],
    check: bool,
    clock: &mut OpClock,
    t: Duration,
) -> Result<()> {
    let mut i = 0;
    while clock.go(i) {
        let t0 = Instant::now();
        let resp = within("get", t, client.get(key, None)).await?;
        let t1 = Instant::now();
        match resp.kvs() {
            [kv] if !check || kv.value() == value => {}
            [kv] => bail!("get {key}: {} bytes, not the {} written", kv.value().len(), value.len()),
            kvs => bail!("get {key}: {} keys", kvs.len()),
        }
        clock.record(i, t0, t1);
        i += 1;
    }
    Ok(())
}

async fn client(spec: &NsSpec, endpoints: &[String], prefix: &str) -> Result<Outcome> {
    let t = spec.op_timeout;
    let mut client = within("connect", t, Client::connect(endpoints, None)).await?;
    let value = payload(spec.value_bytes);
    let key = format!("{prefix}f");
    within("put", t, client.put(key.as_str(), value.clone(), None)).await?;
    let mut clock = OpClock::start(spec);
    match spec.op {
        Op::Stat | Op::Read => {
            gets(&mut client, &key, &value, spec.op == Op::Read, &mut clock, t).await?;
            clock.finish(true)
        }
        Op::ReadDuringWrites => {
            let other = format!("{prefix}g");
            let mut writer = within("connect", t, Client::connect(endpoints, None)).await?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopped = stop.clone();
            let v = value.clone();
            let writes = tokio::spawn(async move {
                let mut n = 0u64;
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    within("put", t, writer.put(other.as_str(), v.clone(), None)).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            });
            gets(&mut client, &key, &value, true, &mut clock, t).await?;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if writes.await.map_err(|e| anyhow!("the writer task: {e}"))?? == 0 {
                bail!("the writer wrote nothing while the reads ran");
            }
            clock.finish(true)
        }
        Op::Write => {
            let mut i = 0;
            while clock.go(i) {
                let t0 = Instant::now();
                within("put", t, client.put(key.as_str(), value.clone(), None)).await?;
                clock.record(i, t0, Instant::now());
                i += 1;
            }
            clock.finish(true)
        }
        Op::CreateRemove => {
            let key = format!("{prefix}cr");
            let mut i = 0;
            while clock.go(i) {
                let t0 = Instant::now();
                let txn = Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), Vec::new(), None)]);
                let created = within("txn", t, client.txn(txn)).await?;
                if !created.succeeded() {
                    bail!("txn create {key}: the key exists");
                }
                let deleted = within("delete", t, client.delete(key.as_str(), None)).await?;
                if deleted.deleted() != 1 {
                    bail!("delete {key}: {} keys deleted", deleted.deleted());
                }
                clock.record(i, t0, Instant::now());
                i += 1;
            }
            clock.finish(true)
        }
        Op::WatchNotify => {
            let mut watch = client.watch_client();
            let mut kv = client.kv_client();
            let mut i = 0;
            while clock.go(i) {
                let key = format!("{prefix}w{i}");
                let mut stream = within("watch", t, watch.watch(key.as_str(), None)).await?;
                match within("watch", t, stream.message()).await? {
                    Some(r) if r.created() && !r.canceled() => {}
                    _ => bail!("etcd watch {key}: not created"),
                }
                tokio::time::sleep(spec.watch_settle).await;
                let t0 = Instant::now();
                let notified = async {
                    let m = stream.message().await;
                    (m, Instant::now())
                };
                let put = async {
                    let r = kv.put(key.as_str(), Vec::new(), None).await;
                    (r, Instant::now())
                };
                let ((put, tw), (event, t1)) = within("put and watch event", t, async {
                    Ok::<_, std::convert::Infallible>(tokio::join!(put, notified))
                })
                .await?;
                put.map_err(|e| anyhow!("etcd put {key}: {e}"))?;
                clock.record_write(i, t0, tw);
                let event = event.map_err(|e| anyhow!("etcd watch {key}: {e}"))?;
                let ok = event.as_ref().is_some_and(|r| {
                    r.events().iter().any(|e| {
                        e.event_type() == EventType::Put && e.kv().is_some_and(|kv| kv.key() == key.as_bytes())
                    })
                });
                if !ok {
                    bail!("etcd watch {key}: no put event ({event:?})");
                }
                clock.record(i, t0, t1);
                drop(stream);
                within("delete", t, client.delete(key.as_str(), None)).await?;
                i += 1;
            }
            clock.finish(false)
        }
    }
}
