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
//! The client is `sigma_control::admin::AdminClient` on a σ core of the calling thread's own
//! (spin 0: it parks at once), made once per thread, with a connection per start made before
//! the start's clock starts. A thread of `spawn-rate` ([`Starter::bare_loop`]) keeps one
//! connection across its starts instead, as a caller starting procs back to back would, and
//! asks for no breakdown.
//!
//! Warm: the binary already in sigmad's cache (started before), the realm already on the
//! machine. Cold: a binary whose bytes sigmad's cache has never held (the big proc with 8 bytes
//! of its own appended after the ELF image, so that its BLAKE3, the cache's key, is new), put
//! into the store just before (not timed), started in a realm made just before in the namespace
//! (not timed) that no proc of this machine has used.
//!
//! Cold from S3 ([`Start::ColdS3`], `cold-start-s3`): the same, through a second sigmad whose
//! binary store is a bucket of an S3 server ([`sigma_tests::s3::S3Server`], s3s-fs in this
//! process on 127.0.0.1, plain HTTP), both opened on the first such start ([`S3Side`]). What it
//! measures is a cold start of a binary this machine has never fetched, from S3, so each start
//! puts new bytes (the big proc with 8 bytes of its own) under a new name into the S3 store
//! through that sigmad (an S3 PUT, not timed): sigmad's cache, keyed by BLAKE3 and kept across
//! starts, misses, and so does its record cache (a new name), so the start asks S3 for the
//! record and GETs all of the object over HTTP, writing and hashing it into the cache as it comes. Not
//! chosen: a fresh sigmad (data dir, cache) per start, which would also throw away what a machine
//! that has run procs keeps (warm cgroups, the spawners, the S3 client's connections) and so
//! time a new machine rather than a binary new to the machine; and the same bytes under a new
//! name, which would hit the cache and fetch only the record. What it does not show: the
//! server is on loopback in this process (no network distance; its CPU is counted with
//! sigmabench's), the object was just written (in the page cache, as the local store's file is
//! in `cold-start`), and sigmad's HTTP connection to it may be open already from the put, as a
//! busy machine's would be. The server is s3s-fs 0.14.1 with one change (`sigma_tests::s3`):
//! s3s-fs answers a GET by reading the file 4 KiB at a time through tokio's file API (each read
//! a blocking-pool job; with curl as the client it served this 11.2 MiB object in 75–90 ms on
//! the 2-core VM of 2026-11-27, most of a start from it); the fixture keeps s3s-fs's answer and
//! serves the body in 1 MiB reads, so the fetch measures σ's client rather than that loop. The
//! server still shares the 2 CPUs with sigmad.
//!
//! Breakdown: after each start (not timed), sigmad is asked where it went (`START_TIMES`,
//! [`WireStartTimes`]: its own CLOCK_MONOTONIC stamps), which fills schedule, fetch, namespaces,
//! cgroups, jail and seccomp; verify is inside fetch (BLAKE3 as the bytes stream), and
//! exec-to-started and started-to-reaped stay null (sigmad sees the exec, not the proc's main).
//! A start whose times do not come back gets nulls, never an estimate.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use sigma_control::admin::AdminClient;
use sigma_dataplane::Core;
use sigma_ep::ns::NsRequest;
use sigma_ep::proc::{ProcRequest, WireClass, WireStartTimes, WireStatus, BIN_PIECE_BYTES_MAX};

use sigma_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};

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
/// The S3 store's bucket and prefix.
const S3_BUCKET: &str = "sigmabench-bins";
const S3_PREFIX: &str = "bins";

/// One sigmad: its socket, its pid (for its CPU and its reaped procs').
struct Daemon {
    sock: PathBuf,
    pid: u32,
    sigmad: Mutex<Sigmad>,
}

impl Daemon {
    /// Wraps a started sigmad.
    fn new(sigmad: Sigmad) -> Result<Daemon> {
        Ok(Daemon {
            sock: sigmad.sock.clone(),
            pid: sigmad.pid().context("sigmad exited")?,
            sigmad: Mutex::new(sigmad),
        })
    }

    /// `e`, with sigmad's status and last log lines if it has died.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        match self.sigmad.lock().unwrap_or_else(|p| p.into_inner()).exited() {
            Some(d) => anyhow!("{e:#}; {d}"),
            None => e,
        }
    }
}

/// What `cold-start-s3` starts run against: an S3 server in this process with one bucket, and a
/// sigmad of its own whose binary store is that bucket (`--store s3://BUCKET/PREFIX
/// --s3-endpoint http://127.0.0.1:PORT --s3-allow-http`, the server's keys in
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`). Fields drop in order: sigmad stops before
/// its store does.
struct S3Side {
    daemon: Daemon,
    _server: S3Server,
}

/// Starts the S3 server and its sigmad, and checks that sigmad reaches the store (a `bin list`).
fn open_s3(bin: &Path, cpu: usize) -> Result<S3Side> {
    let server = S3Server::start(&[S3_BUCKET]).map_err(|e| anyhow!("{e}"))?;
    let args: Vec<String> = vec![
        "--store".into(),
        format!("s3://{S3_BUCKET}/{S3_PREFIX}"),
        "--s3-endpoint".into(),
        server.endpoint.clone(),
        "--s3-region".into(),
        REGION.into(),
        "--s3-allow-http".into(),
    ];
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let sigmad =
        Sigmad::start_with_env(bin, cpu, &args, &env).context("starting sigmad with its binary store in S3")?;
    let daemon = Daemon::new(sigmad)?;
    with_client(&daemon.sock, async |c| {
        call(c, &ProcRequest::BinList).await.context("bin list on the S3 store")
    })
    .map_err(|e| daemon.explain(e))?;
    Ok(S3Side {
        daemon,
        _server: server,
    })
}

struct SigmaStarter {
    /// The sigmad of warm and cold starts, on its local store.
    local: Daemon,
    /// The big proc's bytes (cold starts put a variant of them).
    big: Bytes,
    /// What opens [`S3Side`]: sigmad's binary and core.
    bin: PathBuf,
    cpu: usize,
    /// Opened on the first start from S3 (the case's warm-up start, so before its CPU is read);
    /// an error is kept and given to every such start.
    s3: OnceLock<std::result::Result<S3Side, String>>,
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
            // The client parks at once: it waits a spawn's or an exit's millisecond, which no
            // spin shortens, and on a 2-core machine a spinning client takes CPU from the
            // sigmad, spawner and proc it waits for (the other systems' starts run in-process
            // with nothing spinning).
            *c = Some(
                Core::builder()
                    .spin(Duration::ZERO)
                    .early_wake(false)
                    .build()
                    .context("starting the client's σ core")?,
            );
        }
        let core = c.as_ref().expect("set above");
        core.block_on(async move {
            let client = AdminClient::connect(sock).await.map_err(|e| anyhow!("{}", e.message))?;
            f(&client).await
        })
    })
}

/// Where sigmad says proc `pid`'s start went (asked after the start, not timed); None if it
/// does not say.
async fn start_times(client: &AdminClient, realm: &str, pid: u64) -> Option<WireStartTimes> {
    let req = ProcRequest::StartTimes {
        realm: realm.to_string(),
        pid,
    };
    let reply = call(client, &req).await.ok()?;
    client.decode_proc(reply, WireStartTimes::decode).ok()
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

/// Spawn, then wait for the exit, which must be 0; the proc's σ pid.
async fn spawn_and_wait(client: &AdminClient, realm: &str, program: &str) -> Result<u64> {
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
        Ok(WireStatus::Ok) => Ok(pid),
        Ok(other) => bail!("{program} (pid {pid}) in realm {realm} ended {other}"),
        Err(e) => bail!("{}", e.message),
    }
}

/// Opens the system: starts sigmad and puts the example procs into its store. The S3 side is
/// opened later, by the first start from S3 ([`S3Side`]): `spawn-rate` and the other cases do
/// without it.
pub fn open(env: &Env) -> Result<Arc<dyn Starter>> {
    let bin = crate::sigmad::binary()?;
    let cores = crate::affinity::available_cores().max(1);
    let cpu = SIGMAD_CORE.min(cores - 1);
    let sigmad = Sigmad::start(&bin, cpu, &[]).context("starting sigmad")?;
    let local = Daemon::new(sigmad)?;
    let big = Bytes::from(std::fs::read(&env.big).with_context(|| format!("reading {}", env.big.display()))?);
    let trivial =
        Bytes::from(std::fs::read(&env.trivial).with_context(|| format!("reading {}", env.trivial.display()))?);
    // Checked here, so that a sigmad without procs says why at once.
    with_client(&local.sock, async |c| {
        put(c, "big", &big, 1).await?;
        put(c, "trivial", &trivial, 2).await?;
        create_realm(c, WARM_REALM).await
    })
    .map_err(|e| local.explain(e))?;
    Ok(Arc::new(SigmaStarter {
        local,
        big,
        bin,
        cpu,
        s3: OnceLock::new(),
    }))
}

impl SigmaStarter {
    /// The S3 side, opened on first use.
    fn s3(&self) -> Result<&S3Side> {
        self.s3
            .get_or_init(|| open_s3(&self.bin, self.cpu).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// A cold start of the big proc through `daemon`: new bytes under a new name put into its
    /// store and a new realm (neither timed), then Spawn + WaitExit (timed), then where sigmad
    /// says it went, and both removed (not timed). The time, ns, and sigmad's times.
    fn cold(&self, daemon: &Daemon, seq: u64) -> Result<(u64, Option<WireStartTimes>)> {
        // New bytes (a new BLAKE3, so a cache miss) under a new name, in a new realm.
        let mut bytes = Vec::with_capacity(self.big.len() + 8);
        bytes.extend_from_slice(&self.big);
        bytes.extend_from_slice(&(seq ^ now_ns()).to_le_bytes());
        let bytes = Bytes::from(bytes);
        let (name, realm) = (format!("big-cold-{seq}"), format!("cold-{seq}"));
        with_client(&daemon.sock, async |c| {
            put(c, &name, &bytes, seq).await?;
            create_realm(c, &realm).await?;
            let t0 = now_ns();
            let pid = spawn_and_wait(c, &realm, &name).await?;
            let took = now_ns() - t0;
            // Not timed: where it went, and the store and the namespace do not keep what each
            // start made.
            let times = start_times(c, &realm, pid).await;
            let _ = call(c, &ProcRequest::BinRemove { name: name.clone() }).await;
            let _ = c.call(&NsRequest::RemoveRealm { realm: realm.clone() }, None).await;
            Ok((took, times))
        })
    }
}

/// A warm start of `proc` on `client` and nothing else (no breakdown asked): Spawn + WaitExit.
async fn bare_start(client: &AdminClient, proc: Proc) -> Result<Sample> {
    let t0 = now_ns();
    spawn_and_wait(client, WARM_REALM, proc_name(proc)).await?;
    Ok(Sample {
        total_ns: now_ns() - t0,
        steps: Steps::default(),
    })
}

/// The program name `proc` is put under.
fn proc_name(proc: Proc) -> &'static str {
    match proc {
        Proc::Trivial => "trivial",
        Proc::Big => "big",
    }
}

impl Starter for SigmaStarter {
    fn start(&self, how: Start, proc: Proc, seq: u64) -> Result<Sample> {
        let program = proc_name(proc);
        if how != Start::Warm && proc != Proc::Big {
            bail!("cold starts are of the big proc only");
        }
        let daemon = match how {
            Start::Warm | Start::Cold => &self.local,
            Start::ColdS3 => &self.s3()?.daemon,
        };
        let r = match how {
            Start::Warm => with_client(&daemon.sock, async |c| {
                let t0 = now_ns();
                let pid = spawn_and_wait(c, WARM_REALM, program).await?;
                let took = now_ns() - t0;
                Ok((took, start_times(c, WARM_REALM, pid).await))
            }),
            Start::Cold | Start::ColdS3 => self.cold(daemon, seq),
        };
        match r {
            Ok((total_ns, times)) => Ok(Sample {
                total_ns,
                steps: times.map_or_else(Steps::default, |t| {
                    let ns = |us: u64| Some(us * 1000);
                    Steps {
                        schedule: ns(t.schedule_us),
                        // A warm start's fetch is the cache's memo: reported as it is.
                        fetch: ns(t.fetch_us),
                        namespaces: ns(t.namespaces_us),
                        cgroups: ns(t.cgroups_us),
                        jail: ns(t.jail_us),
                        seccomp: ns(t.seccomp_us),
                        ..Steps::default()
                    }
                }),
            }),
            Err(e) => Err(daemon.explain(e)),
        }
    }

    fn start_bare(&self, proc: Proc, _seq: u64) -> Result<Sample> {
        with_client(&self.local.sock, async |c| bare_start(c, proc).await).map_err(|e| self.local.explain(e))
    }

    fn bare_loop(
        &self,
        proc: Proc,
        _seq: &dyn Fn() -> u64,
        go_on: &dyn Fn() -> bool,
        each: &mut dyn FnMut(Sample) -> Result<()>,
    ) -> Result<()> {
        // One connection for the whole loop: the RPC client's tasks live within one block_on.
        with_client(&self.local.sock, async |c| {
            while go_on() {
                each(bare_start(c, proc).await?)?;
            }
            Ok(())
        })
        .map_err(|e| self.local.explain(e))
    }

    fn bare_note(&self) -> String {
        "through sigmad: a Spawn call on its admin socket, then WaitExit until the proc exited 0, on one connection per thread kept across its starts (AdminClient on a σ core of the calling thread), and nothing else (no START_TIMES: the rate suite reports no breakdown); binary already in sigmad's cache, realm already on the machine; sigmad's defaults, so each start takes a warm sandbox made while an earlier proc ran (--warm-sandboxes 4); CPU: sigmabench's process (the client) + sigmad and the procs it reaped (/proc/PID/stat with cutime and cstime, 10 ms ticks)".to_string()
    }

    fn daemon_cpu_ns(&self) -> Option<u64> {
        // Each sigmad's own CPU and its reaped children's: the procs. The S3 side's sigmad once
        // it is open (idle outside `cold-start-s3`).
        let local = super::process_cpu_ns(self.local.pid, true)?;
        match self.s3.get() {
            Some(Ok(s3)) => Some(local + super::process_cpu_ns(s3.daemon.pid, true)?),
            _ => Some(local),
        }
    }

    fn note(&self, how: Start) -> String {
        let cold = "Spawn + WaitExit of a binary sigmad's cache has never held (the big proc with 8 bytes of its own appended: a new BLAKE3, the cache's key) under a name new to it";
        let what = match how {
            Start::Warm => "through sigmad: a Spawn call on its admin socket (AdminClient on a σ core of the calling thread, a connection per start made before its clock starts), then WaitExit until the proc exited 0; binary already in sigmad's cache, realm already on the machine; sigmad's defaults, so from the third start on each start takes a warm sandbox made while the previous proc ran (--warm-sandboxes 4; SIGMA_WARM_SANDBOXES=0 turns them off): its namespaces, jail and seccomp steps read 0 and cgroups is the spawner's part (limits, request)".to_string(),
            Start::Cold => format!("through sigmad: {cold}, put into sigmad's local binary store just before, in a realm made in the namespace just before and never used on this machine (the put and the realm are not timed); sigmad fetches it from its store into its cache and verifies it, while its spawner sets the new realm up and makes the proc's sandbox from the file being checked (so the namespaces, jail and seccomp steps read 0, as in a warm start), then starts it in that sandbox"),
            Start::ColdS3 => format!("through a second sigmad whose binary store is S3: an S3 server (s3s-fs 0.14.1, sigma_tests::s3) in sigmabench's process on 127.0.0.1, plain HTTP, bucket {S3_BUCKET}; {cold}, put into the S3 store through sigmad just before (an S3 PUT: the object's file in the page cache), in a realm made just before (neither timed); sigmad knows the record from the put (a start within RECORD_TTL, 1 s, of a put through the same sigmad reads none; another machine's sigmad would GET it) and GETs the object from S3 over HTTP (4 MiB ranged parts, up to four in flight), writing and hashing each 1 MiB piece on its cache-IO cores as it comes, while its spawner sets the realm up and makes the proc's sandbox from the file being written, then starts it in that sandbox; the server's GetObject bodies are read from its file 1 MiB at a time (s3s-fs's own 4 KiB reads through tokio's blocking pool set the fetch's pace before), and it shares the 2 CPUs with sigmad"),
        };
        let breakdown = "breakdown: sigmad's own times of the start, asked after it (START_TIMES, not timed): schedule = the binary ready to the sandbox's first step (the hop to a spawner thread, a new realm's set-up, the log pipe, control socket and journal line), fetch = the spawn's arrival to the binary's path (warm: the cache's memo; cold: the record, known from the put just before through the same sigmad (no store read within RECORD_TTL of a put), then from the local store a hard link checked where it lies (size, ELF headers, BLAKE3 in 1 MiB pieces on sigmad's cache-IO cores, one per CPU), from S3 the ranged GETs, each 1 MiB piece written and hashed on a cache-IO core while the rest comes, then the rename; so verify_us is null, inside fetch), namespaces, cgroups, jail, seccomp as the sandbox's steps; exec_to_started and started_to_reaped null (sigmad sees the exec, not the proc's main)";
        let cpu = match how {
            Start::ColdS3 => "CPU: sigmabench's process (the client, and the S3 server's thread) + both sigmads and the procs they reaped (/proc/PID/stat with cutime and cstime, 10 ms ticks; the local store's sigmad is idle)",
            Start::Cold => "CPU: sigmabench's process (the client) + sigmad and the procs it reaped (/proc/PID/stat with cutime and cstime, 10 ms ticks), over the whole case per start: it includes the untimed put of each start's fresh 11 MiB binary (hashed and written by sigmad) and its new realm, so it exceeds the start's own",
            Start::Warm => "CPU: sigmabench's process (the client) + sigmad and the procs it reaped (/proc/PID/stat with cutime and cstime, 10 ms ticks)",
        };
        format!("{what}; {breakdown}; {cpu}")
    }
}
