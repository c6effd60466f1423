//! `sigma`: a proc started through sigmad's proc lifecycle, the way `sigmactl spawn` and
//! `sigmactl wait` do it: a `Spawn` call on sigmad's admin socket (sigmad resolves the program
//! in its binary store, fetches it into its content-addressed cache and verifies it if need be,
//! and starts it in a σcontainer through its spawner), then a `WaitExit` call until the proc
//! has exited 0. A sample is from sending the spawn to the wait's reply.
//!
//! Opened once per suite run: a real sigmad (the one built beside sigmabench, or
//! `SIGMA_SIGMAD`) on a temporary data dir with its default local binary store, its
//! data-plane core on core 1, stopped (SIGTERM: it stops its procs and removes its cgroups) when
//! the system is dropped; the example procs put into its store (`bin put`); a warm realm.
//! The client is `sigma_control::admin::AdminClient` on a σ core of the calling thread's own,
//! made once per thread, with a connection per start made before the start's clock starts.
//!
//! Warm: the binary already in sigmad's cache (started before), the realm already on the
//! machine. Cold: a binary whose bytes sigmad's cache has never held (the big proc with 8 bytes
//! of its own appended after the ELF image, so that its BLAKE3, the cache's key, is new), put
//! into the store just before (not timed), started in a realm made just before in the namespace
//! (not timed) that no proc of this machine has used. sigmad does not report where the time of a
//! start went yet, so the breakdown fields are null.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use sigma_control::admin::AdminClient;
use sigma_dataplane::Core;
use sigma_ep::ns::NsRequest;
use sigma_ep::proc::{ProcRequest, WireClass, WireStatus, BIN_PIECE_BYTES_MAX};

use super::{now_ns, Env, Proc, Sample, Start, Starter, Steps};
use crate::sigmad::Sigmad;

/// sigmad's data-plane core.
const SIGMAD_CORE: usize = 1;
/// The realm of warm starts.
const WARM_REALM: &str = "bench-warm";
/// Memory limit of a proc, MiB.
const PROC_MEM_MIB: u32 = 64;
/// Milli-cores of a proc.
const PROC_MCPU: u32 = 1000;
/// How long a proc that exits at once may take to be reported.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

struct SigmaStarter {
    sock: PathBuf,
    /// sigmad's pid, for its CPU (and its reaped procs').
    pid: u32,
    /// The big proc's bytes (cold starts put a variant of them).
    big: Bytes,
    sigmad: std::sync::Mutex<Sigmad>,
}

thread_local! {
    /// The calling thread's σ core.
    static CORE: RefCell<Option<Core>> = const { RefCell::new(None) };
}

/// Runs `f` on the calling thread's σ core with a fresh admin connection to `sock` (made before
/// `f` runs, so `f` can time without it). A connection lives within one `block_on`: what the
/// RPC client runs beside the caller does not outlive it.
fn with_client<T>(sock: &Path, f: impl AsyncFnOnce(&AdminClient) -> Result<T>) -> Result<T> {
    CORE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(Core::builder().build().context("starting the client's σ core")?);
        }
        let core = c.as_ref().expect("set above");
        core.block_on(async move {
            let client = AdminClient::connect(sock).await.map_err(|e| anyhow!("{}", e.message))?;
            f(&client).await
        })
    })
}

async fn call(client: &AdminClient, req: &ProcRequest) -> Result<Bytes> {
    client.call_proc(req, None).await.map_err(|e| anyhow!("{}", e.message))
}

/// `bin put NAME` of `data`, in pieces.
async fn put(client: &AdminClient, name: &str, data: &Bytes, upload: u64) -> Result<()> {
    let total = data.len() as u64;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + BIN_PIECE_BYTES_MAX).min(data.len());
        let req = ProcRequest::BinPut {
            name: name.to_string(),
            upload,
            offset: offset as u64,
            total,
            data: data.slice(offset..end),
        };
        call(client, &req).await.with_context(|| format!("bin put {name}"))?;
        offset = end;
    }
    Ok(())
}

async fn create_realm(client: &AdminClient, realm: &str) -> Result<()> {
    client
        .call(
            &NsRequest::CreateRealm {
                realm: realm.to_string(),
            },
            None,
        )
        .await
        .map_err(|e| anyhow!("creating realm {realm}: {}", e.message))?;
    Ok(())
}

/// Spawn, then wait for the exit, which must be 0.
async fn spawn_and_wait(client: &AdminClient, realm: &str, program: &str) -> Result<()> {
    let reply = call(
        client,
        &ProcRequest::Spawn {
            realm: realm.to_string(),
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            class: WireClass::Lc { mcpu: PROC_MCPU },
            mem_mib: PROC_MEM_MIB,
        },
    )
    .await
    .with_context(|| format!("spawn {program} in realm {realm}"))?;
    let pid = <[u8; 8]>::try_from(&reply[..])
        .map(u64::from_le_bytes)
        .map_err(|_| anyhow!("spawn reply of {} bytes, not a pid", reply.len()))?;
    let reply = call(
        client,
        &ProcRequest::WaitExit {
            realm: realm.to_string(),
            pid,
            timeout_ms: WAIT_TIMEOUT.as_millis() as u64,
        },
    )
    .await
    .with_context(|| format!("wait for pid {pid} in realm {realm}"))?;
    match client.decode_proc(reply, WireStatus::decode) {
        Ok(WireStatus::Ok) => Ok(()),
        Ok(other) => bail!("{program} (pid {pid}) in realm {realm} ended {other}"),
        Err(e) => bail!("{}", e.message),
    }
}

/// Opens the system: starts sigmad and puts the example procs into its store.
pub fn open(env: &Env) -> Result<Arc<dyn Starter>> {
    let bin = crate::sigmad::binary()?;
    let cores = crate::affinity::available_cores().max(1);
    let sigmad = Sigmad::start(&bin, SIGMAD_CORE.min(cores - 1), &[]).context("starting sigmad")?;
    let sock = sigmad.sock.clone();
    let big = Bytes::from(std::fs::read(&env.big).with_context(|| format!("reading {}", env.big.display()))?);
    let trivial =
        Bytes::from(std::fs::read(&env.trivial).with_context(|| format!("reading {}", env.trivial.display()))?);
    // Checked here, so that a sigmad without procs says why at once.
    let opened = with_client(&sock, async |c| {
        put(c, "big", &big, 1).await?;
        put(c, "trivial", &trivial, 2).await?;
        create_realm(c, WARM_REALM).await
    });
    if let Err(e) = opened {
        let mut sigmad = sigmad;
        let died = sigmad.exited();
        bail!("{e:#}{}", died.map_or(String::new(), |d| format!("; {d}")));
    }
    let pid = sigmad.pid().context("sigmad exited")?;
    Ok(Arc::new(SigmaStarter {
        sock,
        pid,
        big,
        sigmad: std::sync::Mutex::new(sigmad),
    }))
}

impl Starter for SigmaStarter {
    fn start(&self, how: Start, proc: Proc, seq: u64) -> Result<Sample> {
        let program = match proc {
            Proc::Trivial => "trivial",
            Proc::Big => "big",
        };
        let r = match how {
            Start::Warm => with_client(&self.sock, async |c| {
                let t0 = now_ns();
                spawn_and_wait(c, WARM_REALM, program).await?;
                Ok(now_ns() - t0)
            }),
            Start::Cold => {
                if proc != Proc::Big {
                    bail!("cold starts are of the big proc only");
                }
                // New bytes (a new BLAKE3, so a cache miss) under a new name, in a new realm.
                let mut bytes = Vec::with_capacity(self.big.len() + 8);
                bytes.extend_from_slice(&self.big);
                bytes.extend_from_slice(&(seq ^ now_ns()).to_le_bytes());
                let bytes = Bytes::from(bytes);
                let (name, realm) = (format!("big-cold-{seq}"), format!("cold-{seq}"));
                with_client(&self.sock, async |c| {
                    put(c, &name, &bytes, seq).await?;
                    create_realm(c, &realm).await?;
                    let t0 = now_ns();
                    spawn_and_wait(c, &realm, &name).await?;
                    let took = now_ns() - t0;
                    // Not timed: the store and the namespace do not keep what each start made.
                    let _ = call(c, &ProcRequest::BinRemove { name: name.clone() }).await;
                    let _ = c.call(&NsRequest::RemoveRealm { realm: realm.clone() }, None).await;
                    Ok(took)
                })
            }
        };
        match r {
            Ok(total_ns) => Ok(Sample {
                total_ns,
                steps: Steps::default(),
            }),
            Err(e) => {
                let died = self.sigmad.lock().unwrap_or_else(|p| p.into_inner()).exited();
                match died {
                    Some(d) => Err(anyhow!("{e:#}; {d}")),
                    None => Err(e),
                }
            }
        }
    }

    fn daemon_cpu_ns(&self) -> Option<u64> {
        // sigmad's own CPU and its reaped children's: the procs.
        super::process_cpu_ns(self.pid, true)
    }

    fn note(&self, how: Start) -> String {
        let what = match how {
            Start::Warm => "through sigmad: a Spawn call on its admin socket (AdminClient on a σ core of the calling thread, a connection per start made before its clock starts), then WaitExit until the proc exited 0; binary already in sigmad's cache, realm already on the machine",
            Start::Cold => "through sigmad: Spawn + WaitExit of a binary sigmad's cache has never held (the big proc with 8 bytes of its own appended: a new BLAKE3, the cache's key), put into sigmad's local binary store just before, in a realm made in the namespace just before and never used on this machine (the put and the realm are not timed); sigmad fetches it from its store into its cache, verifies it, then starts it",
        };
        format!("{what}; sigmad does not report where a start's time went yet (breakdown null); CPU: sigmabench's process (the client) + sigmad and the procs it reaped (/proc/PID/stat with cutime and cstime, 10 ms ticks)")
    }
}
