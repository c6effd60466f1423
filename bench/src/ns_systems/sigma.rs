//! `sigma-embedded` and `sigma-etcd`: a real `sigmad` process (on its embedded store, or with
//! `--etcd` on the suite's etcd), reached through its admin Unix socket by
//! `sigma_control::admin::AdminClient` — the client `sigmactl` uses — on a σ data-plane core.
//!
//! Both systems share the client; they differ only in how sigmad is started.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use sigma_control::admin::AdminClient;
use sigma_dataplane::Core;
use sigma_ep::ns::{NsRequest, WireStat};

use super::{Addr, ClientCore, Env, NsSpec, NsSystem, Op, OpClock, Outcome, Started};
use crate::sigmad::Sigmad;
use crate::systems::payload;

/// The realm every run works in.
const REALM: &str = "bench";
/// Entry kinds on the wire.
const KIND_FILE: u8 = 2;

/// sigmad on embedded defaults (redb under a temporary `--data`).
#[derive(Debug)]
pub struct SigmaEmbedded;

/// sigmad with `--etcd` on the suite's etcd, under a key prefix of the run's own.
#[derive(Debug)]
pub struct SigmaEtcd;

impl NsSystem for SigmaEmbedded {
    fn name(&self) -> &'static str {
        "sigma-embedded"
    }

    fn note(&self) -> String {
        format!(
            "sigmad on embedded defaults (redb in a temp dir under {}, fsync per commit), through its admin Unix socket; {}",
            std::env::temp_dir().display(),
            client_note()
        )
    }

    fn needs_etcd(&self) -> bool {
        false
    }

    fn uses_sigmad(&self) -> bool {
        true
    }

    fn start(&self, env: &Env) -> Result<Started> {
        let sigmad = Sigmad::start(env.sigmad_bin()?, env.server_core, &[])?;
        Ok(Started {
            addr: Addr::Sigmad(sigmad.sock.clone()),
            sigmad: Some(sigmad),
        })
    }

    fn run(&self, spec: &NsSpec, addr: &Addr) -> Result<Outcome> {
        let Addr::Sigmad(sock) = addr else {
            bail!("sigma-embedded needs a sigmad socket");
        };
        run_client(spec, sock)
    }
}

impl NsSystem for SigmaEtcd {
    fn name(&self) -> &'static str {
        "sigma-etcd"
    }

    fn note(&self) -> String {
        format!(
            "`sigmad --etcd` (the namespace on the etcd store) through its admin Unix socket, not in-process; {}",
            client_note()
        )
    }

    fn needs_etcd(&self) -> bool {
        true
    }

    fn uses_sigmad(&self) -> bool {
        true
    }

    fn start(&self, env: &Env) -> Result<Started> {
        let endpoints = env.etcd_endpoints()?;
        let args = [
            "--etcd".to_string(),
            endpoints.join(","),
            "--etcd-prefix".to_string(),
            env.run_prefix(self.name()),
        ];
        let sigmad = Sigmad::start(env.sigmad_bin()?, env.server_core, &args)?;
        Ok(Started {
            addr: Addr::Sigmad(sigmad.sock.clone()),
            sigmad: Some(sigmad),
        })
    }

    fn run(&self, spec: &NsSpec, addr: &Addr) -> Result<Outcome> {
        let Addr::Sigmad(sock) = addr else {
            bail!("sigma-etcd needs a sigmad socket");
        };
        run_client(spec, sock)
    }
}

fn client_note() -> String {
    let spin = std::env::var("SIGMA_SPIN_US").unwrap_or_else(|_| sigma_dataplane::limits::SPIN_US_DEFAULT.to_string());
    format!("client: AdminClient on a σ core (spin {spin}us)")
}

/// One admin call with a deadline; a refusal becomes an error naming the request.
async fn call(client: &AdminClient, req: &NsRequest, timeout: Duration) -> Result<Bytes> {
    client
        .call(req, Some(timeout))
        .await
        .map_err(|e| anyhow!("{} {}: {}: {}", method_name(req), path_of(req), e.kind, e.message))
}

fn method_name(req: &NsRequest) -> &'static str {
    match req {
        NsRequest::CreateRealm { .. } => "create realm",
        NsRequest::Create { .. } => "create",
        NsRequest::Read { .. } => "read",
        NsRequest::Write { .. } => "write",
        NsRequest::Remove { .. } => "remove",
        NsRequest::Stat { .. } => "stat",
        NsRequest::OpenWatch { .. } => "open watch",
        _ => "request",
    }
}

fn path_of(req: &NsRequest) -> &str {
    match req {
        NsRequest::Create { path, .. }
        | NsRequest::Read { path, .. }
        | NsRequest::Write { path, .. }
        | NsRequest::Remove { path, .. }
        | NsRequest::Stat { path, .. }
        | NsRequest::OpenWatch { path, .. } => path,
        NsRequest::CreateRealm { realm } => realm,
        _ => "",
    }
}

fn decode_stat(reply: Bytes) -> Result<WireStat> {
    WireStat::decode(reply).map_err(|e| anyhow!("a stat reply does not decode: {e}"))
}

fn create(path: &str, data: Bytes) -> NsRequest {
    NsRequest::Create {
        realm: REALM.into(),
        path: path.into(),
        perm: 0o644,
        kind: KIND_FILE,
        data,
        lease: 0,
    }
}

fn remove(path: &str) -> NsRequest {
    NsRequest::Remove {
        realm: REALM.into(),
        path: path.into(),
    }
}

/// Reads `path` (which holds `value`) until the clock says stop, recording each read.
async fn reads(client: &AdminClient, path: &str, value: &Bytes, clock: &mut OpClock, t: Duration) -> Result<()> {
    let req = NsRequest::Read {
        realm: REALM.into(),
        path: path.into(),
    };
    let mut i = 0;
    while clock.go(i) {
        let t0 = Instant::now();
        let reply = call(client, &req, t).await?;
        let t1 = Instant::now();
        if reply != *value {
            bail!("read {path}: {} bytes, not the {} written", reply.len(), value.len());
        }
        clock.record(i, t0, t1);
        i += 1;
    }
    Ok(())
}

/// Sends `req` (a stat or a write of the file at its path) until the clock says stop, recording
/// each; every reply must be a stat of `len` bytes.
async fn stat_replies(client: &AdminClient, req: &NsRequest, len: u64, clock: &mut OpClock, t: Duration) -> Result<()> {
    let mut i = 0;
    while clock.go(i) {
        let t0 = Instant::now();
        let reply = call(client, req, t).await?;
        let t1 = Instant::now();
        let st = decode_stat(reply)?;
        if st.len != len {
            bail!("{} {}: len {} instead of {len}", method_name(req), path_of(req), st.len);
        }
        clock.record(i, t0, t1);
        i += 1;
    }
    Ok(())
}

/// The client of one run, on a σ core pinned to the client core.
fn run_client(spec: &NsSpec, sock: &Path) -> Result<Outcome> {
    let core = Core::builder()
        .pin(spec.client_core)
        .build()
        .context("starting the client's σ core")?;
    core.block_on(async move {
        let before = sigma_dataplane::stats().context("the client's σ core")?;
        let mut out = client_ops(spec, sock).await?;
        let after = sigma_dataplane::stats().context("the client's σ core")?;
        out.client_core = Some(ClientCore {
            parks: after.parks - before.parks,
            early_wakes: after.early_wakes - before.early_wakes,
            early_wakes_caught: after.early_wakes_caught - before.early_wakes_caught,
        });
        Ok(out)
    })
}

/// The operations of one run, on the client's core.
async fn client_ops(spec: &NsSpec, sock: &Path) -> Result<Outcome> {
    let t = spec.op_timeout;
    let client = AdminClient::connect(sock).await.map_err(|e| anyhow!("{}", e.message))?;
    call(&client, &NsRequest::CreateRealm { realm: REALM.into() }, t).await?;
    let value = Bytes::from(payload(spec.value_bytes));
    const FILE: &str = "/f";
    call(&client, &create(FILE, value.clone()), t).await?;
    let mut clock = OpClock::start(spec);
    match spec.op {
        Op::Stat => {
            let req = NsRequest::Stat {
                realm: REALM.into(),
                path: FILE.into(),
            };
            stat_replies(&client, &req, spec.value_bytes as u64, &mut clock, t).await?;
            clock.finish(true)
        }
        Op::ReadDuringWrites => {
            const OTHER: &str = "/g";
            call(&client, &create(OTHER, value.clone()), t).await?;
            let writer = AdminClient::connect(sock).await.map_err(|e| anyhow!("{}", e.message))?;
            let stop = std::rc::Rc::new(std::cell::Cell::new(false));
            let stopped = stop.clone();
            let write = NsRequest::Write {
                realm: REALM.into(),
                path: OTHER.into(),
                data: value.clone(),
                if_version: 0,
            };
            let writes = sigma_dataplane::spawn(async move {
                let mut n = 0u64;
                while !stopped.get() {
                    call(&writer, &write, t).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            });
            reads(&client, FILE, &value, &mut clock, t).await?;
            stop.set(true);
            if writes.await? == 0 {
                bail!("the writer wrote nothing while the reads ran");
            }
            clock.finish(true)
        }
        Op::Read => {
            reads(&client, FILE, &value, &mut clock, t).await?;
            clock.finish(true)
        }
        Op::Write => {
            let req = NsRequest::Write {
                realm: REALM.into(),
                path: FILE.into(),
                data: value.clone(),
                if_version: 0,
            };
            stat_replies(&client, &req, spec.value_bytes as u64, &mut clock, t).await?;
            clock.finish(true)
        }
        Op::CreateRemove => {
            const PATH: &str = "/cr";
            let (mk, rm) = (create(PATH, Bytes::new()), remove(PATH));
            let mut i = 0;
            while clock.go(i) {
                let t0 = Instant::now();
                call(&client, &mk, t).await?;
                call(&client, &rm, t).await?;
                clock.record(i, t0, Instant::now());
                i += 1;
            }
            clock.finish(true)
        }
        Op::WatchNotify => {
            // The watcher has its own connection: a watch holds its connection until it ends.
            let watcher = Rc::new(AdminClient::connect(sock).await.map_err(|e| anyhow!("{}", e.message))?);
            let mut i = 0;
            while clock.go(i) {
                let path = format!("/w{i}");
                let watch = NsRequest::OpenWatch {
                    realm: REALM.into(),
                    path: path.clone(),
                    timeout_ms: t.as_millis() as u64,
                };
                let w = watcher.clone();
                let notified = sigma_dataplane::spawn(async move {
                    let r = call(&w, &watch, t + Duration::from_secs(1)).await;
                    (r, Instant::now())
                });
                sigma_dataplane::sleep(spec.watch_settle).await;
                let t0 = Instant::now();
                call(&client, &create(&path, Bytes::new()), t).await?;
                clock.record_write(i, t0, Instant::now());
                let (reply, t1) = notified.await;
                let st = decode_stat(reply?)?;
                if format!("/{}", st.name) != path {
                    bail!("the watch on {path} reported {:?}", st.name);
                }
                clock.record(i, t0, t1);
                call(&client, &remove(&path), t).await?;
                i += 1;
            }
            clock.finish(false)
        }
    }
}
