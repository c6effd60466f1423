//! The systems under test (σ and its peers): the [`System`] trait, the registry and shared harness helpers.
//!
//! To add a system: write `src/systems/NAME.rs` with a unit struct implementing
//! [`System`] (use [`run_pair`] and [`RttRecorder`] for the ping-pong so that
//! pinning, readiness, timeouts and warm-up behave like every other peer), add
//! `mod NAME;` below and put the struct into [`all`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use crate::affinity::pin_current_thread;

mod compio;
mod glommio;
mod monoio;
mod sigma;
mod spin_floor;
mod std_blocking;
mod tokio;
mod tokio_uring;

/// Socket family of a ping-pong connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP over loopback (TCP_NODELAY set on both ends).
    Tcp,
    /// A Unix stream socket in the temp dir.
    Unix,
}

/// What one ping-pong run does.
#[derive(Debug, Clone)]
pub struct PingPongSpec {
    /// Socket family.
    pub transport: Transport,
    /// Bytes sent by the client and echoed back per round trip.
    pub payload_bytes: usize,
    /// Recorded round trips.
    pub samples: u64,
    /// Round trips done first and not recorded.
    pub warmup: u64,
    /// Core of the client thread.
    pub client_core: usize,
    /// Core of the server thread.
    pub server_core: usize,
}

/// A runtime (or plain-syscall baseline) that sigmabench can measure.
pub trait System: Send + Sync {
    /// Name used in rows and on the command line.
    fn name(&self) -> &'static str;
    /// One connection, client and server both in this system, on two threads pinned to the two cores.
    /// Records each round-trip time in nanoseconds.
    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>>;
    /// Serves a TCP echo (write back whatever is read, any number of connections) on `addr`, on the
    /// calling thread pinned to `core`, until the process is killed. Calls `ready()` once listening.
    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()>;
    /// A short note for the row (e.g. "current_thread, one per core").
    fn note(&self) -> String {
        String::new()
    }
}

/// Every known system, in report order.
pub fn all() -> Vec<Box<dyn System>> {
    vec![
        Box::new(sigma::Sigma),
        Box::new(sigma::SigmaEpoll),
        Box::new(tokio::Tokio),
        Box::new(glommio::Glommio),
        Box::new(monoio::Monoio),
        Box::new(compio::Compio),
        Box::new(tokio_uring::TokioUring),
        Box::new(std_blocking::StdBlocking),
        Box::new(spin_floor::SpinFloor),
    ]
}

/// Names of every known system, in report order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|s| s.name()).collect()
}

/// The system called `name`, if any.
pub fn by_name(name: &str) -> Option<Box<dyn System>> {
    all().into_iter().find(|s| s.name() == name)
}

// ---------------------------------------------------------------------------
// Harness helpers shared by the implementations.

/// Where a ping-pong server listens (what it was asked to bind, or what it bound).
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    /// A TCP address; port 0 when asking for an ephemeral port.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// How long a server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server may take to exit after its client closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blocking or spinning wait that makes no progress for this long is an error.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A unique Unix socket path in the temp dir for `system`.
pub(crate) fn unix_socket_path(system: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("sigmabench-{}-{}-{}.sock", std::process::id(), system, n))
}

/// Removes a Unix socket path when dropped.
struct PathGuard(Option<PathBuf>);

impl Drop for PathGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

fn run_caught<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(anyhow!("panicked: {}", panic_message(&*p))),
    }
}

/// Runs one ping-pong: `server` on a thread pinned to `spec.server_core`, `client` on a thread
/// pinned to `spec.client_core`.
///
/// `server` gets the endpoint to bind (TCP 127.0.0.1:0 or a fresh Unix path) and must call
/// `ready` with the endpoint it actually listens on, then echo one connection until EOF and
/// return. `client` gets that endpoint and returns what it measured (the RTT histogram for a
/// ping-pong; the `rpc` suite's systems return other results). Panics in either become
/// errors; the Unix path is removed afterwards.
pub(crate) fn run_pair<S, C, T>(spec: &PingPongSpec, system: &'static str, server: S, client: C) -> Result<T>
where
    S: FnOnce(Endpoint, &mut dyn FnMut(Endpoint)) -> Result<()> + Send + 'static,
    C: FnOnce(Endpoint, PingPongSpec) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (bind, _guard) = match spec.transport {
        Transport::Tcp => (Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))), PathGuard(None)),
        Transport::Unix => {
            let p = unix_socket_path(system);
            let _ = std::fs::remove_file(&p);
            (Endpoint::Unix(p.clone()), PathGuard(Some(p)))
        }
    };

    let (ready_tx, ready_rx) = mpsc::channel::<Endpoint>();
    let (sdone_tx, sdone_rx) = mpsc::channel::<Result<()>>();
    let server_core = spec.server_core;
    std::thread::Builder::new()
        .name(format!("{system}-server"))
        .spawn(move || {
            let r = run_caught(|| {
                pin_current_thread(server_core)?;
                let mut ready = |ep: Endpoint| {
                    let _ = ready_tx.send(ep);
                };
                server(bind, &mut ready)
            });
            let _ = sdone_tx.send(r);
        })
        .context("spawning server thread")?;

    let ep = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(ep) => ep,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("server not listening after {READY_TIMEOUT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return match sdone_rx.recv_timeout(EXIT_TIMEOUT) {
                Ok(Err(e)) => Err(e.context("server failed before listening")),
                Ok(Ok(())) => Err(anyhow!("server returned without listening")),
                Err(_) => Err(anyhow!("server thread died before listening")),
            };
        }
    };

    let (cdone_tx, cdone_rx) = mpsc::channel::<Result<T>>();
    let cspec = spec.clone();
    std::thread::Builder::new()
        .name(format!("{system}-client"))
        .spawn(move || {
            let r = run_caught(|| {
                pin_current_thread(cspec.client_core)?;
                client(ep, cspec)
            });
            let _ = cdone_tx.send(r);
        })
        .context("spawning client thread")?;

    // The caller (the suite) bounds the whole run with its own deadline.
    let client_result = cdone_rx.recv().unwrap_or_else(|_| Err(anyhow!("client thread died")));
    let server_result = match sdone_rx.recv_timeout(EXIT_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(anyhow!(
            "server did not exit within {EXIT_TIMEOUT:?} after the client closed"
        )),
    };
    match (client_result, server_result) {
        (Ok(h), Ok(())) => Ok(h),
        (Ok(_), Err(s)) => Err(s.context("server")),
        (Err(c), Ok(())) => Err(c.context("client")),
        (Err(c), Err(s)) => Err(anyhow!("client: {c:#}; server: {s:#}")),
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Counts warm-up and recorded round trips for a ping-pong client.
pub(crate) struct RttRecorder {
    hist: Histogram<u64>,
    warmup: u64,
    samples: u64,
}

impl RttRecorder {
    pub(crate) fn new(spec: &PingPongSpec) -> Self {
        RttRecorder {
            hist: new_histogram(),
            warmup: spec.warmup,
            samples: spec.samples,
        }
    }

    /// Total round trips to do (warm-up + recorded).
    pub(crate) fn total(&self) -> u64 {
        self.warmup + self.samples
    }

    /// Records round trip `i` (0-based) that started at `t0`, unless it is a warm-up one.
    pub(crate) fn record(&mut self, i: u64, t0: Instant) {
        let ns = t0.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        if i >= self.warmup {
            self.hist.saturating_record(ns.max(1));
        }
    }

    pub(crate) fn finish(self) -> Histogram<u64> {
        self.hist
    }
}

/// The bytes a ping-pong client sends (a non-constant pattern so echo mistakes show).
pub(crate) fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Checks that what came back is what was sent.
pub(crate) fn check_echo(sent: &[u8], got: &[u8]) -> Result<()> {
    if sent != got {
        bail!(
            "echo mismatch ({} bytes sent, {} bytes back differ)",
            sent.len(),
            got.len()
        );
    }
    Ok(())
}

/// A blocking-std stream of either family.
#[derive(Debug)]
pub(crate) enum StdStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl StdStream {
    pub(crate) fn connect(ep: &Endpoint) -> Result<StdStream> {
        Ok(match ep {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, READY_TIMEOUT).with_context(|| format!("connect {a}"))?;
                s.set_nodelay(true)?;
                StdStream::Tcp(s)
            }
            Endpoint::Unix(p) => {
                StdStream::Unix(UnixStream::connect(p).with_context(|| format!("connect {}", p.display()))?)
            }
        })
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            StdStream::Tcp(s) => s.set_nonblocking(on),
            StdStream::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        match self {
            StdStream::Tcp(s) => s.set_read_timeout(d),
            StdStream::Unix(s) => s.set_read_timeout(d),
        }
    }
}

impl Read for StdStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            StdStream::Tcp(s) => s.read(buf),
            StdStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for StdStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            StdStream::Tcp(s) => s.write(buf),
            StdStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blocking-std listener of either family.
#[derive(Debug)]
pub(crate) enum StdListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl StdListener {
    /// Binds `ep`; returns the listener and the endpoint it actually listens on.
    pub(crate) fn bind(ep: &Endpoint) -> Result<(StdListener, Endpoint)> {
        Ok(match ep {
            Endpoint::Tcp(a) => {
                let l = TcpListener::bind(a).with_context(|| format!("bind {a}"))?;
                let actual = l.local_addr()?;
                (StdListener::Tcp(l), Endpoint::Tcp(actual))
            }
            Endpoint::Unix(p) => (StdListener::Unix(bind_unix(p)?), Endpoint::Unix(p.to_path_buf())),
        })
    }

    /// Accepts one connection (TCP_NODELAY set on TCP).
    pub(crate) fn accept(&self) -> std::io::Result<StdStream> {
        match self {
            StdListener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(StdStream::Tcp(s))
            }
            StdListener::Unix(l) => Ok(StdStream::Unix(l.accept()?.0)),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            StdListener::Tcp(l) => l.set_nonblocking(on),
            StdListener::Unix(l) => l.set_nonblocking(on),
        }
    }
}

fn bind_unix(p: &Path) -> Result<UnixListener> {
    UnixListener::bind(p).with_context(|| format!("bind {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(transport: Transport) -> PingPongSpec {
        PingPongSpec {
            transport,
            payload_bytes: 64,
            samples: 200,
            warmup: 20,
            client_core: 0,
            server_core: 1.min(crate::affinity::available_cores() - 1),
        }
    }

    #[test]
    fn server_failing_before_listening_is_an_error() {
        let r: Result<Histogram<u64>> = run_pair(
            &spec(Transport::Tcp),
            "test",
            |_, _| Err(anyhow!("no can do")),
            |_, _| unreachable!("client must not run"),
        );
        let msg = format!("{:#}", r.unwrap_err());
        assert!(msg.contains("no can do"), "{msg}");
    }

    #[test]
    fn std_peers_measure_every_sample_and_clean_up() {
        for t in [Transport::Tcp, Transport::Unix] {
            for sys in [by_name("std-blocking").unwrap(), by_name("spin-floor").unwrap()] {
                let h = sys.pingpong(&spec(t)).unwrap();
                assert_eq!(h.len(), 200, "{} {t:?}", sys.name());
                assert!(h.value_at_quantile(0.5) > 0);
            }
        }
        let leftover = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("sigmabench-{}-", std::process::id()))
            });
        assert!(!leftover, "unix socket paths left behind");
    }

    #[test]
    fn registry_order_and_lookup() {
        assert_eq!(
            names(),
            [
                "sigma",
                "sigma-epoll",
                "tokio",
                "glommio",
                "monoio",
                "compio",
                "tokio-uring",
                "std-blocking",
                "spin-floor"
            ]
        );
        assert!(by_name("nope").is_none());
    }
}
