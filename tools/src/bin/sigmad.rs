//! sigmad: the per-machine σ daemon.
//!
//! It serves the realm namespace (named) and procs on its admin Unix
//! socket, in one shape whichever store holds the namespace: the
//! data-plane core answers every request; the control thread (a tokio
//! current-thread runtime) holds the store's control-plane side — the
//! embedded redb store's lease sweeps under `--data`, or with `--etcd` the
//! etcd client, each etcd request a task there that the core awaits — and
//! the binary server. SIGTERM or SIGINT stops it cleanly: it stops
//! accepting, removes its socket and exits 0.

use anyhow::{bail, Context};
use clap::Parser;
use sigma_control::admin::{AdminService, BoundService};
use sigma_control::bins::limits::{BIN_CACHE_BYTES_DEFAULT, RECORD_TTL_DEFAULT};
use sigma_control::bins::{BinCache, BinRegistry, DataPlaneIo, DataPlaneIoServer, StoreConfig};
use sigma_control::conn_limit::{self, ConnLimit};
use sigma_control::log_limit::LogLimit;
use sigma_control::ns::embedded::EmbeddedStore;
use sigma_control::ns::etcd::{EtcdStore, REQUEST_TIMEOUT};
use sigma_control::ns::{Namespace, Store};
use sigma_control::procs::{bin_channel, BinServer, Procs};
use sigma_dataplane::net::UnixListener;
use sigma_dataplane::rpc::{ConnectionError, ServerConfig, Transport};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The per-machine σ daemon: serves the realm namespace on a Unix socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory for sigmad's state (the namespace store, the default socket).
    #[arg(long, default_value = "sigma-data")]
    data: PathBuf,
    /// The admin socket (default: DATA/sigmad.sock).
    #[arg(long)]
    sock: Option<PathBuf>,
    /// etcd endpoints (comma-separated, `host:port` or `http://host:port`):
    /// keep the namespace in that etcd cluster instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Key prefix of σ's namespace in etcd.
    #[arg(long, default_value = "/sigma/ns/")]
    etcd_prefix: String,
    /// This machine's name, for `~local` in paths (default: the hostname).
    #[arg(long)]
    machine: Option<String>,
    /// The cpu the data-plane core and the control thread are pinned to
    /// (they take turns: the core parks while it awaits the control
    /// thread's work, such as an etcd request, and a wake-up on the same
    /// cpu costs less than one across cpus).
    #[arg(long)]
    cpu: Option<usize>,
    /// Admin connections served at once; past it a new connection is told
    /// why and closed. At most the open-file limit allows (sigmad raises
    /// its soft limit to the hard one) and at most 15000.
    #[arg(long, default_value_t = sigma_control::conn_limit::CONNECTIONS_DEFAULT)]
    max_connections: usize,
    /// Close an admin connection that sends nothing for this many seconds
    /// while none of its calls runs (a pending watch keeps it open); 0: never.
    /// Long, since a proc holds its connection for its whole life.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = seconds)]
    idle_timeout: Duration,
    /// Close an admin connection that began a frame and did not finish it
    /// within this many seconds; 0: never.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    frame_timeout: Duration,
    /// Where procs' binaries live: `s3://BUCKET[/PREFIX]`, or a local
    /// directory (default: DATA/bins/store).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// S3 endpoint of `--store` (e.g. http://127.0.0.1:9000); AWS's when
    /// unset. Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region of `--store` (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    s3_region: Option<String>,
    /// Allow an http:// S3 endpoint (a test server or a private network).
    #[arg(long)]
    s3_allow_http: bool,
    /// Do not start procs (no sandbox, no spawner): serve the namespace only.
    #[arg(long)]
    no_procs: bool,
    /// Copy binaries from a local store into the cache instead of hard-linking
    /// them (the default links a store file on the cache's filesystem and
    /// checks it by reading: a cold start writes nothing; a copy keeps the
    /// cache independent of later writes to the store's files).
    #[arg(long)]
    bin_cache_copy: bool,
    /// Bound on the binary cache (DATA/bins/cache), MiB. Past it, the least
    /// recently used binaries are removed (and fetched again when next
    /// spawned); never one a spawn is starting from. Files hard-linked from
    /// a local store count by their size. A binary larger than the bound
    /// cannot be spawned here.
    #[arg(long, value_name = "MIB", default_value_t = BIN_CACHE_BYTES_DEFAULT >> 20,
          value_parser = clap::value_parser!(u64).range(1..=u64::MAX >> 20))]
    bin_cache_mib: u64,
    /// Keep the kernel's cgroup migration lock warm: a thread moves itself
    /// between two of sigmad's v1 cgroups this often (ms; 0 = off, the
    /// default). Procs join v1 cgroups through `tasks`, which does not take
    /// that lock, so only joins through a v2 `cgroup.procs` can gain: there,
    /// without it, a proc started after a quiet spell waits milliseconds (an
    /// RCU grace period); with it, forks and exits on the machine take a
    /// slower path, as with the kernel's `favordynmods` mount option (prefer
    /// that option where you can set it).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    cgroup_keep_warm_ms: u64,
    /// Cgroup sets of ended procs each realm keeps per class for the next
    /// procs (at most 256): a start that finds one skips making its cgroup
    /// directories, and an end that keeps one skips removing them. The
    /// pool only keeps what ended, so a realm holds at most as many as it
    /// ever ran at once, up to this.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=256))]
    warm_cgroups: u16,
    /// Warm sandboxes each realm holds (at most 64; 0 = off): from a
    /// binary's second start in a realm and class on, a sandbox for its
    /// next start is made ahead, while the proc runs -- namespaces, jail
    /// with the binary, cgroups, uid, no capabilities, seccomp -- and
    /// waits, so that the next start costs a wake-up and an exec. Each is
    /// a waiting process; past N the realm's oldest goes.
    #[arg(long, env = "SIGMA_WARM_SANDBOXES", default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u8).range(0..=64))]
    warm_sandboxes: u8,
    /// Data-plane cores serving the binary cache's file IO (at most 8; 0 =
    /// one per CPU, up to 4): the main core and N-1 more, each on a thread
    /// of its own (not pinned, not bound by --cpu, as the spawners) that
    /// parks while it has no work. A binary already on this machine (a
    /// local store's file, hard-linked) is read and hashed in pieces on
    /// all of them at once.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=8))]
    cache_io_cores: u8,
}

impl Args {
    /// The data-plane cores serving cache IO (see `--cache-io-cores`).
    fn cache_io_cores(&self) -> usize {
        match self.cache_io_cores {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(4),
            n => usize::from(n),
        }
    }

    fn server_config(&self) -> ServerConfig {
        let on = |d: Duration| (!d.is_zero()).then_some(d);
        ServerConfig {
            idle_timeout: on(self.idle_timeout),
            frame_timeout: on(self.frame_timeout),
        }
    }
}

/// Seconds (a decimal number, at least 0) as a duration.
fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Lines about admin connections ending badly, at most, per [`LOG_WINDOW`].
const LOG_LINES_PER_WINDOW_MAX: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What serving admin connections needs: the service, the connection
/// limit, the log limit on bad connections, and the timeouts.
struct Admin<S: Store> {
    service: AdminService<S>,
    conns: Rc<ConnLimit>,
    logs: RefCell<LogLimit>,
    config: ServerConfig,
}

impl<S: Store> Admin<S> {
    fn new(service: AdminService<S>, sock: &Path, max_connections: usize, config: ServerConfig) -> Rc<Admin<S>> {
        Rc::new(Admin {
            service,
            conns: ConnLimit::new(max_connections, format!("sigmad at {}", sock.display())),
            logs: RefCell::new(LogLimit::new(LOG_LINES_PER_WINDOW_MAX, LOG_WINDOW)),
            config,
        })
    }

    /// One admin connection, `slot` its place under the limit (taken when
    /// it was accepted): served and its end logged; or, without a place,
    /// told why it is refused (while few refusals linger), else closed.
    async fn connection<T: Transport>(self: Rc<Self>, stream: T, slot: Option<conn_limit::Slot>) {
        let Some(slot) = slot else {
            if self.conns.start_refusing() {
                conn_limit::refuse(&stream, &self.conns).await;
                self.conns.done_refusing();
            }
            return;
        };
        let result = sigma_dataplane::rpc::serve_with(&stream, &self.service, self.config).await;
        connection_ended(&self.logs, result);
        drop(slot);
    }

    /// A proc's control connection (its fd 3), served bound to its realm
    /// and pid, for the proc's whole life (no idle timeout); when it ends,
    /// the leases the proc still holds are revoked.
    async fn proc_connection<T: Transport>(self: Rc<Self>, stream: T, realm: String, pid: u64) {
        let service = BoundService::new(&self.service, &realm, pid);
        let config = ServerConfig {
            idle_timeout: None,
            ..self.config
        };
        let result = sigma_dataplane::rpc::serve_with(&stream, &service, config).await;
        connection_ended(&self.logs, result);
        // The proc is gone (or closed its fd 3): its leases, and the
        // ephemeral entries attached to them, go.
        service.end().await;
    }

    /// At stop: kills every proc and removes the sandbox.
    fn stop_procs(&self) {
        if let Some(procs) = self.service.procs() {
            procs.shutdown();
        }
    }

    /// At stop: the count of bad-connection lines suppressed, if any.
    fn flush_logs(&self) {
        self.logs.borrow_mut().flush("admin connections ending with an error");
    }
}

/// Logs how an admin connection ended: nothing for a clean end, a debug
/// line for an idle one closed, one rate-limited WARN line for a bad one.
fn connection_ended(limit: &RefCell<LogLimit>, result: Result<(), ConnectionError>) {
    match result {
        Ok(()) => {}
        Err(e @ ConnectionError::Idle { .. }) => tracing::debug!(error = %e, "admin connection closed"),
        Err(e) => {
            let (admitted, suppressed) = limit.borrow_mut().admit(Instant::now());
            if suppressed > 0 {
                tracing::warn!(
                    suppressed,
                    "suppressed {suppressed} similar messages (admin connections ending with an error)"
                );
            }
            if admitted {
                tracing::warn!(error = %e, "admin connection ended with an error");
            }
        }
    }
}

/// What serving procs needs, made before the threads start: the proc
/// table and spawner, the binary cache, and the cache's IO server when it
/// runs on a data-plane core.
struct ProcsSetup {
    procs: Option<Procs>,
    bins: Option<(BinServer, BinCache)>,
    /// The first runs on the main core, each other on a core of its own.
    io_servers: Vec<DataPlaneIoServer>,
}

/// Sets up procs (unless `--no-procs`): the binary store (`--store`, or a
/// directory under the data directory) and its cache under DATA/bins/cache
/// (bounded to `--bin-cache-mib`), the cache's file IO on the data-plane
/// core, and the
/// spawner with its sandbox (procs are disabled, with a warning saying why,
/// where the sandbox cannot start, e.g. without root or cgroups).
fn setup_procs(args: &Args, data: &Path) -> anyhow::Result<ProcsSetup> {
    if args.no_procs {
        return Ok(ProcsSetup {
            procs: None,
            bins: None,
            io_servers: Vec::new(),
        });
    }
    let mut store = match &args.store {
        Some(url) => StoreConfig::url(url.clone()),
        None => StoreConfig::local_default(data),
    };
    store.endpoint = args.s3_endpoint.clone();
    store.region = args.s3_region.clone();
    store.allow_http = args.s3_allow_http;
    let registry = BinRegistry::open(&store).with_context(|| format!("opening the binary store {}", store.url))?;
    let (io, io_servers) = DataPlaneIo::with_cores(args.cache_io_cores());
    let io = Arc::new(io);
    let cache_dir = data.join("bins").join("cache");
    let cache = BinCache::open_bounded(&cache_dir, registry, io, RECORD_TTL_DEFAULT, args.bin_cache_mib << 20)
        .with_context(|| format!("opening the binary cache {}", cache_dir.display()))?;
    cache.link_local_files(!args.bin_cache_copy);
    let (client, server) = bin_channel(Some(cache.clone()));
    // Named after the data directory, whose lock this sigmad holds: what
    // a sigmad of the same directory left behind (killed with -9) is its
    // own to reclaim.
    let mut sandbox = sigma_control::procs::SandboxConfig::new(&format!(
        "sigmad-{:016x}",
        fnv1a(data.as_os_str().as_encoded_bytes())
    ));
    sandbox.jail_dir = data.join("jail");
    sandbox.warm_cgroups = usize::from(args.warm_cgroups);
    sandbox.warm_sandboxes = usize::from(args.warm_sandboxes);
    // A realm new to the machine takes a network namespace made ahead.
    sandbox.netns_pool = 2;
    sandbox.cgroup_keep_warm =
        (args.cgroup_keep_warm_ms > 0).then(|| Duration::from_millis(args.cgroup_keep_warm_ms.min(1000)));
    let procs = Procs::start(
        sandbox,
        data.join("procs").join("logs"),
        data.join("procs").join("live"),
        data.join("bins").join("staging"),
        client,
        true,
    );
    Ok(ProcsSetup {
        procs: Some(procs),
        bins: Some((server, cache)),
        io_servers,
    })
}

/// FNV-1a, 64 bits: a short stable name for a path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts
/// later), so that one thread can wait for them with sigwait.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only read and write it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Takes an exclusive `flock` on `path` (created if missing) for this
/// process's lifetime. The kernel drops the lock when the process dies,
/// however it dies; a dying sigmad may take a moment, so this retries
/// briefly. `Ok(None)` if another process still holds it. The file is never
/// removed: a process waiting on a removed file's lock would hold a lock
/// nobody else can see.
fn take_lock(path: &Path) -> anyhow::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on an fd we own; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long sigmad waits for a lock a dying sigmad may still hold.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Takes the data directory's lock: one sigmad per directory. The lock file
/// also records the socket this sigmad bound (see [`SocketClaim`]).
fn lock_data_dir(data: &Path) -> anyhow::Result<std::fs::File> {
    let path = data.join("sigmad.lock");
    match take_lock(&path)? {
        Some(file) => Ok(file),
        None => bail!(
            "another sigmad is running with --data {} (it holds {})",
            data.display(),
            path.display()
        ),
    }
}

/// The device and inode of the file at `path` (not following a symlink).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What the data directory's lock file says about the socket its last
/// sigmad bound: `sock PATH`, `dev N`, `ino N`, one per line.
#[derive(Debug, PartialEq, Eq)]
struct SocketRecord {
    sock: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketRecord {
    fn parse(text: &str) -> Option<SocketRecord> {
        let (mut sock, mut dev, mut ino) = (None, None, None);
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("sock", v)) => sock = Some(PathBuf::from(v)),
                Some(("dev", v)) => dev = v.parse().ok(),
                Some(("ino", v)) => ino = v.parse().ok(),
                _ => {}
            }
        }
        Some(SocketRecord {
            sock: sock?,
            dev: dev?,
            ino: ino?,
        })
    }

    fn render(&self) -> String {
        format!("sock {}\ndev {}\nino {}\n", self.sock.display(), self.dev, self.ino)
    }
}

/// This sigmad's hold on its admin socket's path: the lock `PATH.lock`
/// beside it (so two sigmads with different `--data` cannot share a
/// `--sock`), and, once bound, the socket's identity, recorded in the data
/// directory's lock file. On stop the socket is removed only if the file at
/// the path is still the one this sigmad bound.
struct SocketClaim {
    sock: PathBuf,
    _lock: std::fs::File,
    data_lock: std::fs::File,
    bound: Option<(u64, u64)>,
}

impl SocketClaim {
    /// Claims `sock` for the sigmad holding `data_lock` (the lock file of
    /// `data`). Refuses a path that holds anything but a stale socket of
    /// this data directory, and never touches a socket that answers.
    fn take(sock: &Path, data: &Path, mut data_lock: std::fs::File) -> anyhow::Result<SocketClaim> {
        use std::io::{Read, Seek};
        let lock_path = {
            let mut name = sock.as_os_str().to_owned();
            name.push(".lock");
            PathBuf::from(name)
        };
        let Some(lock) = take_lock(&lock_path)? else {
            bail!(
                "another sigmad serves --sock {} (it holds {})",
                sock.display(),
                lock_path.display()
            );
        };
        let mut recorded = String::new();
        data_lock
            .rewind()
            .and_then(|_| data_lock.read_to_string(&mut recorded))
            .with_context(|| format!("reading {}", data.join("sigmad.lock").display()))?;
        let record = SocketRecord::parse(&recorded);
        match std::fs::symlink_metadata(sock) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("looking at --sock {}", sock.display())),
            Ok(meta) => {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                if !meta.file_type().is_socket() {
                    bail!(
                        "--sock {} exists and is not a socket ({}); sigmad will not replace it",
                        sock.display(),
                        describe(&meta.file_type())
                    );
                }
                // A socket that accepts is in use, or belongs to a sigmad
                // still dying: the kernel tears a dead process's io_uring
                // down (and with it the listening socket in its fixed-file
                // table) after the process is gone and its locks released.
                // So wait a moment for it to refuse.
                let deadline = Instant::now() + LOCK_WAIT;
                loop {
                    match std::os::unix::net::UnixStream::connect(sock) {
                        Ok(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Ok(_) => bail!(
                            "--sock {}: a server answers there (another sigmad?); sigmad will not replace it",
                            sock.display()
                        ),
                        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => break,
                        Err(e) => bail!(
                            "--sock {}: cannot tell whether the socket there is in use ({e}); \
                             sigmad will not replace it",
                            sock.display()
                        ),
                    }
                }
                // Nobody listens. Remove it only if a sigmad of this data
                // directory made it: the recorded socket, or the default one.
                let ours = record
                    .as_ref()
                    .is_some_and(|r| r.sock == absolute(sock) && (r.dev, r.ino) == (meta.dev(), meta.ino()))
                    || sock == data.join("sigmad.sock");
                if !ours {
                    bail!(
                        "--sock {} holds a socket nobody listens on that no sigmad of --data {} made; \
                         sigmad will not replace it (remove it yourself if it is not in use)",
                        sock.display(),
                        data.display()
                    );
                }
                std::fs::remove_file(sock).with_context(|| format!("removing the stale socket {}", sock.display()))?;
                tracing::info!(sock = %sock.display(), "removed the socket of a previous sigmad");
            }
        }
        Ok(SocketClaim {
            sock: sock.to_path_buf(),
            _lock: lock,
            data_lock,
            bound: None,
        })
    }

    /// Records the socket just bound at the path, in the data directory's lock file.
    fn bound(&mut self) -> anyhow::Result<()> {
        use std::io::{Seek, Write};
        let (dev, ino) =
            file_id(&self.sock).with_context(|| format!("the socket {} vanished after bind", self.sock.display()))?;
        self.bound = Some((dev, ino));
        let record = SocketRecord {
            sock: absolute(&self.sock),
            dev,
            ino,
        };
        self.data_lock.set_len(0)?;
        self.data_lock.rewind()?;
        self.data_lock.write_all(record.render().as_bytes())?;
        Ok(())
    }

    /// Removes the socket if it is still the one this sigmad bound.
    fn remove(&self) {
        if self.bound.is_some() && file_id(&self.sock) == self.bound {
            if let Err(e) = std::fs::remove_file(&self.sock) {
                tracing::warn!(sock = %self.sock.display(), error = %e, "removing the socket");
            }
        }
    }
}

/// `path` made absolute against the working directory (which sigmad never
/// changes), so the record names the same file however `--sock` was spelt.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn describe(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a socket"
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = Args::parse();
    if args.max_connections == 0 || args.max_connections > conn_limit::CONNECTIONS_MAX {
        bail!(
            "--max-connections {}: must be 1 to {} (each connection may hold two of a data-plane core's operations in flight)",
            args.max_connections,
            conn_limit::CONNECTIONS_MAX
        );
    }
    match conn_limit::raise_nofile() {
        Ok(room) if (room as usize) < args.max_connections => {
            tracing::warn!(
                max_connections = args.max_connections,
                room,
                "the open-file limit (hard RLIMIT_NOFILE) leaves room for {room} connections: serving at most that many"
            );
            args.max_connections = (room as usize).max(1);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    args.data = absolute(&args.data);
    let sock = args.sock.clone().unwrap_or_else(|| args.data.join("sigmad.sock"));
    let machine = args.machine.clone().unwrap_or_else(hostname);
    let signals = block_stop_signals();
    let data_lock = lock_data_dir(&args.data)?;
    let mut claim = SocketClaim::take(&sock, &args.data, data_lock)?;
    let result = run(&args, &mut claim, &machine, signals);
    claim.remove();
    result
}

/// Starts the thread that waits for SIGTERM/SIGINT and hands the signal to `deliver`.
fn spawn_signal_thread(signals: libc::sigset_t, deliver: impl FnOnce(i32) + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("sigma-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `signals` is a valid set and `sig` a valid out pointer.
            unsafe { libc::sigwait(&signals, &mut sig) };
            deliver(sig);
        })?;
    Ok(())
}

/// Serves on the store `--etcd` chooses: the embedded store under DATA, or
/// the etcd cluster. Either way the process has one shape (see [`run_on`]).
fn run(args: &Args, claim: &mut SocketClaim, machine: &str, signals: libc::sigset_t) -> anyhow::Result<()> {
    match args.etcd.clone() {
        None => {
            let db = args.data.join("ns.redb");
            let where_ = db.display().to_string();
            run_on(args, claim, machine, signals, where_, move || async move {
                EmbeddedStore::open(&db).with_context(|| format!("opening {}", db.display()))
            })
        }
        Some(endpoints) => {
            let where_ = format!("etcd {} under {}", endpoints.join(","), args.etcd_prefix);
            let prefix = args.etcd_prefix.clone();
            run_on(args, claim, machine, signals, where_, move || async move {
                let here = tokio::runtime::Handle::current();
                EtcdStore::connect_on(here, &endpoints, &prefix, REQUEST_TIMEOUT)
                    .await
                    .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))
            })
        }
    }
}

/// sigmad's one shape, on either store: the data-plane core (pinned with
/// the control thread to `--cpu` if given) serves the admin socket and procs' connections; the
/// control thread (a tokio current-thread runtime) opens the store with
/// `open` and runs what is control-plane work: the embedded store's lease
/// sweeps, the etcd client (each etcd request runs there as a task that
/// the core awaits), and the binary server's store fetches.
fn run_on<S, F, Fut>(
    args: &Args,
    claim: &mut SocketClaim,
    machine: &str,
    signals: libc::sigset_t,
    where_: String,
    open: F,
) -> anyhow::Result<()>
where
    S: Store + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<S>>,
{
    let (store_tx, store_rx) = std::sync::mpsc::channel();
    let (stop_control, control_stopped) = tokio::sync::oneshot::channel::<()>();
    let setup = setup_procs(args, &args.data)?;
    let bins = setup.bins;
    let cpu = args.cpu;
    let control = std::thread::Builder::new()
        .name("sigma-control".into())
        .spawn(move || -> anyhow::Result<()> {
            if let Some(cpu) = cpu {
                sigma_dataplane::pin_thread(cpu).with_context(|| format!("pinning the control thread to cpu {cpu}"))?;
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                if let Some((server, cache)) = bins {
                    tokio::spawn(server.run(cache));
                }
                let _ = store_tx.send(open().await);
                let _ = control_stopped.await;
            });
            Ok(())
        })?;
    let (procs, mut io_servers) = (setup.procs, setup.io_servers);
    let main_io_server = (!io_servers.is_empty()).then(|| io_servers.remove(0));
    if !io_servers.is_empty() {
        start_cache_io_cores(io_servers)?;
    }

    let (mut stop_tx, stop_rx) = sigma_dataplane::channel::channel::<i32>(1);
    spawn_signal_thread(signals, move |sig| {
        let _ = stop_tx.try_send(sig);
    })?;

    let mut builder = sigma_dataplane::Core::builder();
    if let Some(cpu) = args.cpu {
        builder = builder.pin(cpu);
    }
    let core = builder.build().context("starting the data-plane core")?;
    tracing::info!(backend = %core.backend(), reason = core.backend_reason(), "data-plane core started");
    let result = core.block_on(async {
        let store = store_rx.recv().context("the control thread died")??;
        if let Some(io) = main_io_server {
            sigma_dataplane::spawn(io.run());
        }
        serve(
            store,
            machine,
            claim,
            &where_,
            args.server_config(),
            args.max_connections,
            stop_rx,
            procs,
        )
        .await
    });
    let _ = stop_control.send(());
    let _ = control.join();
    result
}

use std::future::Future;

/// Starts a data-plane core for each of `servers`, for cache IO alone, on
/// threads of their own (`sigma-cacheio-N`, not pinned): each parks at
/// once when it has no job (spin 0), so it costs nothing while no binary
/// is fetched, and ends when the cache is dropped.
fn start_cache_io_cores(servers: Vec<DataPlaneIoServer>) -> anyhow::Result<()> {
    let count = servers.len();
    let servers: Vec<std::sync::Mutex<Option<DataPlaneIoServer>>> =
        servers.into_iter().map(|s| std::sync::Mutex::new(Some(s))).collect();
    let builder = sigma_dataplane::Core::builder()
        .spin(Duration::ZERO)
        // They serve no socket: a token receive-buffer pool.
        .recv_buffers(8, 4096);
    // The cores' threads are detached: they end with their servers.
    let _cores = sigma_dataplane::Runtime::start_unpinned("sigma-cacheio", count, builder, move |i| {
        let server = servers[i].lock().unwrap_or_else(|p| p.into_inner()).take();
        async move {
            if let Some(server) = server {
                server.run().await;
            }
        }
    })
    .context("starting the cache IO cores")?;
    Ok(())
}

/// Serves the namespace on `store` (and procs) at `sock` until a stop signal arrives.
#[allow(clippy::too_many_arguments)]
async fn serve<S: Store + 'static>(
    store: S,
    machine: &str,
    claim: &mut SocketClaim,
    store_desc: &str,
    config: ServerConfig,
    max_connections: usize,
    mut stop_rx: sigma_dataplane::channel::Receiver<i32>,
    procs: Option<Procs>,
) -> anyhow::Result<()> {
    let sock = claim.sock.clone();
    let ns = Namespace::new(store, machine).await.context("opening the namespace")?;
    let mut service = AdminService::new(ns);
    if let Some(procs) = procs {
        service = service.with_procs(procs);
    }
    let admin = Admin::new(service, &sock, max_connections, config);
    if let Some(mut conns) = admin.service.procs().and_then(|p| p.take_conns()) {
        let admin = admin.clone();
        sigma_dataplane::spawn(async move {
            while let Some(conn) = conns.recv().await {
                match sigma_dataplane::net::UnixStream::from_owned(conn.fd) {
                    Ok(stream) => {
                        sigma_dataplane::spawn(admin.clone().proc_connection(stream, conn.realm, conn.pid));
                    }
                    Err(e) => tracing::warn!(pid = conn.pid, error = %e, "serving a proc's control connection"),
                }
            }
        });
    }
    let listener = UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    claim.bound()?;
    tracing::info!(sock = %sock.display(), store = store_desc, machine, max_connections, "sigmad serving the namespace");
    let mut incoming = listener.incoming();
    loop {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(sig) = std::pin::pin!(stop_rx.recv()).poll(cx) {
                return Poll::Ready(Err(sig));
            }
            std::pin::pin!(incoming.next()).poll(cx).map(Ok)
        })
        .await;
        match next {
            Ok(Ok(stream)) => {
                let slot = admin.conns.admit();
                sigma_dataplane::spawn(admin.clone().connection(stream, slot));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "accept failed"),
            Err(sig) => {
                tracing::info!(
                    signal = sig.unwrap_or(0),
                    "stopping: no longer accepting, removing the socket"
                );
                admin.flush_logs();
                admin.stop_procs();
                return Ok(());
            }
        }
    }
}
