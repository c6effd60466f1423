//! The systems under test (σ and its peers): the [`System`] trait, the registry and shared harness helpers.
//!
//! To add a system: write `src/systems/NAME.rs` with a unit struct implementing
//! [`System`] (use [`run_pair`] and [`RttRecorder`] for the ping-pong so that
//! pinning, readiness, timeouts and warm-up behave like every other peer), add
//! `mod NAME;` below and put the struct into [`all`].

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use crate::affinity::pin_current_thread;
use crate::cpu::{CpuMeter, CpuUse, Side, Window};

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
    /// Records each round-trip time in nanoseconds, and the CPU both threads used meanwhile.
    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured>;
    /// Serves a TCP echo (write back whatever is read, any number of connections) on `addr`, on the
    /// calling thread pinned to `core`, until the process is killed. Calls `ready()` once listening.
    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()>;
    /// A short note for the row (e.g. "current_thread, one per core").
    fn note(&self) -> String {
        String::new()
    }
    /// How the system waits for I/O: what the report compares it with.
    fn waits(&self) -> Waits;
}

/// How a system waits for I/O when there is none: the report compares systems that wait alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waits {
    /// Spins (polls without blocking) for a while, then parks in the kernel.
    Spin,
    /// Parks in the kernel at once.
    Park,
    /// Never parks: the spinning-syscall floor.
    Floor,
}

impl Waits {
    /// The name in the JSON rows (`waits`).
    pub fn as_str(self) -> &'static str {
        match self {
            Waits::Spin => "spin",
            Waits::Park => "park",
            Waits::Floor => "floor",
        }
    }
}

/// A peer runtime as it comes (parking when idle) or spinning for [`spin_budget`] first: the
/// two systems of each peer that has a way to spin.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Row and command-line name.
    pub name: &'static str,
    /// Spins before it parks.
    pub spins: bool,
}

impl Variant {
    /// Parks when idle.
    pub const fn parks(name: &'static str) -> Variant {
        Variant { name, spins: false }
    }

    /// Spins for the spin budget, then parks.
    pub const fn spins(name: &'static str) -> Variant {
        Variant { name, spins: true }
    }

    /// How long a wait spins before it parks (zero: it parks at once).
    pub fn budget(self) -> Duration {
        if self.spins {
            spin_budget()
        } else {
            Duration::ZERO
        }
    }

    /// How the variant waits.
    pub fn waits(self) -> Waits {
        if self.spins {
            Waits::Spin
        } else {
            Waits::Park
        }
    }
}

/// How long the spinning peers spin before they park: σ's spin budget (`SIGMA_SPIN_US`, 50 µs by
/// default), so that every spinning system gets the same.
pub(crate) fn spin_budget() -> Duration {
    sigma_dataplane::default_spin()
}

/// Awaits `fut` the way a user of a runtime without a spin option would busy-poll: while it is
/// pending and less than `budget` has passed, yield to the runtime (`yield_now`, which makes the
/// runtime poll its I/O driver without blocking, since a task is ready) and poll `fut` again;
/// after `budget`, await it normally (the runtime parks).
pub(crate) async fn spin_then_park<F, Y, YF>(fut: F, budget: Duration, mut yield_now: YF) -> F::Output
where
    F: Future,
    YF: FnMut() -> Y,
    Y: Future<Output = ()>,
{
    if budget.is_zero() {
        return fut.await;
    }
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(v) = poll_once(fut.as_mut()).await {
        return v;
    }
    let t0 = Instant::now();
    while t0.elapsed() < budget {
        yield_now().await;
        if let Poll::Ready(v) = poll_once(fut.as_mut()).await {
            return v;
        }
    }
    fut.await
}

/// Polls `fut` once with the task's own context.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// Every known system, in report order.
pub fn all() -> Vec<Box<dyn System>> {
    vec![
        Box::new(sigma::Sigma::DEFAULT),
        Box::new(sigma::Sigma::NOSPIN),
        Box::new(sigma::Sigma::EPOLL),
        Box::new(sigma::Sigma::EPOLL_NOSPIN),
        Box::new(tokio::Tokio::PARKS),
        Box::new(tokio::Tokio::SPINS),
        Box::new(glommio::Glommio::PARKS),
        Box::new(glommio::Glommio::SPINS),
        Box::new(monoio::Monoio::PARKS),
        Box::new(monoio::Monoio::SPINS),
        Box::new(compio::Compio::PARKS),
        Box::new(compio::Compio::SPINS),
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

pub(crate) use sigma_dataplane::panic_message;

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
    // The CPU clocks of the two threads; the client's recorder reads them at the ends of its
    // measurement window (a runtime's own helper threads, where it has any, are idle here).
    let meter = CpuMeter::new();
    let server_meter = meter.clone();
    std::thread::Builder::new()
        .name(format!("{system}-server"))
        .spawn(move || {
            let r = run_caught(|| {
                pin_current_thread(server_core)?;
                server_meter.add_this_thread(Side::Server)?;
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
                meter.add_this_thread(Side::Client)?;
                CpuMeter::set_current(Some(meter));
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

/// What a sequential run measured: one latency per operation (ns) and, where the CPU clocks
/// could be read, the CPU both sides used over the recorded operations.
#[derive(Debug)]
pub struct Measured {
    /// Latency of every recorded operation, ns.
    pub hist: Histogram<u64>,
    /// CPU of the client and server threads over the recorded operations.
    pub cpu: Option<CpuUse>,
}

/// Counts warm-up and recorded round trips for a ping-pong client, and measures the CPU of the
/// run's threads over the recorded ones (the meter [`run_pair`] made current on this thread).
pub(crate) struct RttRecorder {
    hist: Histogram<u64>,
    warmup: u64,
    samples: u64,
    cpu: Window,
}

impl RttRecorder {
    pub(crate) fn new(spec: &PingPongSpec) -> Self {
        let mut cpu = Window::current();
        if spec.warmup == 0 {
            cpu.start();
        }
        RttRecorder {
            hist: new_histogram(),
            warmup: spec.warmup,
            samples: spec.samples,
            cpu,
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
        // The window spans the recorded round trips: from the end of the last warm-up one to
        // the end of the last one.
        if i + 1 == self.warmup {
            self.cpu.start();
        } else if i + 1 == self.total() {
            self.cpu.end();
        }
    }

    pub(crate) fn finish(self) -> Measured {
        Measured {
            hist: self.hist,
            cpu: self.cpu.result(),
        }
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
        let r: Result<Measured> = run_pair(
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
        let _cores = crate::cores_for_test();
        for t in [Transport::Tcp, Transport::Unix] {
            for sys in [by_name("std-blocking").unwrap(), by_name("spin-floor").unwrap()] {
                let m = sys.pingpong(&spec(t)).unwrap();
                assert_eq!(m.hist.len(), 200, "{} {t:?}", sys.name());
                assert!(m.hist.value_at_quantile(0.5) > 0);
                let cpu = m.cpu.expect("CPU measured");
                assert!(cpu.client_ns > 0 && cpu.server_ns > 0 && cpu.wall_ns > 0, "{cpu:?}");
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
                "sigma-nospin",
                "sigma-epoll",
                "sigma-epoll-nospin",
                "tokio",
                "tokio-spin",
                "glommio",
                "glommio-spin",
                "monoio",
                "monoio-spin",
                "compio",
                "compio-spin",
                "tokio-uring",
                "std-blocking",
                "spin-floor"
            ]
        );
        assert!(by_name("nope").is_none());
    }
}
