//! sigmad: the per-machine σ daemon.
//!
//! Today it serves the realm namespace (named) on its admin Unix socket:
//! on embedded defaults a durable redb store under `--data`, answered by
//! the data-plane core while the control thread (a tokio current-thread
//! runtime) sweeps ended leases; or with `--etcd` an etcd cluster, answered
//! by the control runtime on which the etcd client runs (no thread hop per
//! etcd request). SIGTERM or SIGINT stops it cleanly: it stops accepting,
//! removes its socket and exits 0.

use anyhow::{bail, Context};
use clap::Parser;
use sigma_control::admin::AdminService;
use sigma_control::conn_limit::{self, ConnLimit};
use sigma_control::ns::embedded::EmbeddedStore;
use sigma_control::ns::etcd::{EtcdStore, REQUEST_TIMEOUT};
use sigma_control::ns::{Namespace, Store};
use sigma_control::tokio_rpc::TokioUnix;
use sigma_dataplane::net::UnixListener;
use std::path::{Path, PathBuf};
use std::task::Poll;

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
    /// The cpu the data-plane core is pinned to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Admin connections served at once; past it a new connection is told
    /// why and closed. At most the open-file limit allows (sigmad raises
    /// its soft limit to the hard one) and at most 15000.
    #[arg(long, default_value_t = sigma_control::conn_limit::CONNECTIONS_DEFAULT)]
    max_connections: usize,
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

/// Takes the data directory's lock for this process's lifetime: one sigmad
/// per directory. The kernel drops the lock when the process dies, however
/// it dies; a dying sigmad may take a moment, so this retries briefly.
fn lock_data_dir(data: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = data.join("sigmad.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        // SAFETY: flock on an fd we own; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "another sigmad is running with --data {} (it holds {})",
                data.display(),
                path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Removes a socket file left by a sigmad that died. Holding the data
/// directory's lock proves no live sigmad of this directory uses it.
fn clear_stale_socket(sock: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(sock) {
        Ok(()) => {
            tracing::info!(sock = %sock.display(), "removed the socket of a previous sigmad");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the stale socket {}", sock.display())),
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
    let sock = args.sock.clone().unwrap_or_else(|| args.data.join("sigmad.sock"));
    let machine = args.machine.clone().unwrap_or_else(hostname);
    let signals = block_stop_signals();
    let _lock = lock_data_dir(&args.data)?;
    clear_stale_socket(&sock)?;
    match args.etcd.clone() {
        None => run_embedded(&args, &sock, &machine, signals),
        Some(endpoints) => run_etcd(&args, &endpoints, &sock, &machine, signals),
    }
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

/// Embedded defaults: the data-plane core answers requests on the durable
/// local store; the control thread (a tokio current-thread runtime) opens
/// the store and sweeps ended leases.
fn run_embedded(args: &Args, sock: &Path, machine: &str, signals: libc::sigset_t) -> anyhow::Result<()> {
    let db = args.data.join("ns.redb");
    let (store_tx, store_rx) = std::sync::mpsc::channel();
    let (stop_control, control_stopped) = tokio::sync::oneshot::channel::<()>();
    let db_path = db.clone();
    let control = std::thread::Builder::new()
        .name("sigma-control".into())
        .spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let _ = store_tx.send(EmbeddedStore::open(&db_path));
                let _ = control_stopped.await;
            });
            Ok(())
        })?;

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
        let store = store_rx
            .recv()
            .context("the control thread died")?
            .with_context(|| format!("opening {}", db.display()))?;
        let where_ = db.display().to_string();
        serve(store, machine, sock, &where_, args.max_connections, stop_rx).await
    });
    let _ = stop_control.send(());
    let _ = control.join();
    result
}

/// On etcd: the namespace is control-plane work, served from one tokio
/// current-thread runtime on which the etcd client itself runs, so a
/// request reaches etcd and its answer comes back with no thread hop (on a
/// VM each wake-up of another thread costs tens of µs). Pinned to `--cpu`
/// if given.
fn run_etcd(
    args: &Args,
    endpoints: &[String],
    sock: &Path,
    machine: &str,
    signals: libc::sigset_t,
) -> anyhow::Result<()> {
    if let Some(cpu) = args.cpu {
        pin_this_thread(cpu)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<i32>();
    spawn_signal_thread(signals, move |sig| {
        let _ = stop_tx.send(sig);
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async {
        let store = EtcdStore::connect_here(endpoints, &args.etcd_prefix, REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        let where_ = format!("etcd {} under {}", endpoints.join(","), args.etcd_prefix);
        let ns = Namespace::new(store, machine).await.context("opening the namespace")?;
        let service = std::rc::Rc::new(AdminService::new(ns));
        let listener = tokio::net::UnixListener::bind(sock).with_context(|| format!("binding {}", sock.display()))?;
        tracing::info!(sock = %sock.display(), store = where_, machine, max_connections = args.max_connections, "sigmad serving the namespace");
        let limit = ConnLimit::new(args.max_connections, format!("sigmad at {}", sock.display()));
        let mut stop_rx = stop_rx;
        loop {
            tokio::select! {
                sig = &mut stop_rx => {
                    tracing::info!(signal = sig.unwrap_or(0), "stopping: no longer accepting, removing the socket");
                    return Ok(());
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Some(slot) = limit.admit() else {
                            if limit.start_refusing() {
                                let limit = limit.clone();
                                tokio::task::spawn_local(async move {
                                    conn_limit::refuse(&TokioUnix::new(stream), &limit).await;
                                    limit.done_refusing();
                                });
                            }
                            continue;
                        };
                        let service = service.clone();
                        tokio::task::spawn_local(async move {
                            if let Err(e) = sigma_dataplane::rpc::serve(&TokioUnix::new(stream), &*service).await {
                                tracing::warn!(error = %e, "admin connection ended with an error");
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
            }
        }
    });
    // tokio's listener leaves its socket file behind.
    if result.is_ok() {
        if let Err(e) = std::fs::remove_file(sock) {
            tracing::warn!(sock = %sock.display(), error = %e, "removing the socket");
        }
    }
    result
}

/// Pins the calling thread to `cpu`.
fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `cpu` is checked against the set's size first.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            bail!(
                "--cpu {cpu}: beyond the {} cpus an affinity set holds",
                libc::CPU_SETSIZE
            );
        }
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
    }
    // SAFETY: sched_setaffinity reads `set` of the given size; 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning to cpu {cpu}"));
    }
    Ok(())
}

use std::future::Future;

/// Serves the namespace on `store` at `sock` until a stop signal arrives.
async fn serve<S: Store + 'static>(
    store: S,
    machine: &str,
    sock: &Path,
    store_desc: &str,
    max_connections: usize,
    mut stop_rx: sigma_dataplane::channel::Receiver<i32>,
) -> anyhow::Result<()> {
    let ns = Namespace::new(store, machine).await.context("opening the namespace")?;
    let service = std::rc::Rc::new(AdminService::new(ns));
    let listener = UnixListener::bind(sock).with_context(|| format!("binding {}", sock.display()))?;
    tracing::info!(sock = %sock.display(), store = store_desc, machine, max_connections, "sigmad serving the namespace");
    let limit = ConnLimit::new(max_connections, format!("sigmad at {}", sock.display()));
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
                let Some(slot) = limit.admit() else {
                    if limit.start_refusing() {
                        let limit = limit.clone();
                        sigma_dataplane::spawn(async move {
                            conn_limit::refuse(&stream, &limit).await;
                            limit.done_refusing();
                        });
                    }
                    continue;
                };
                let service = service.clone();
                sigma_dataplane::spawn(async move {
                    if let Err(e) = sigma_dataplane::rpc::serve(&stream, &*service).await {
                        tracing::warn!(error = %e, "admin connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "accept failed"),
            Err(sig) => {
                tracing::info!(
                    signal = sig.unwrap_or(0),
                    "stopping: no longer accepting, removing the socket"
                );
                return Ok(());
            }
        }
    }
}
