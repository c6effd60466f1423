//! The common load generator of `pipelined-64B`: one pinned thread, many TCP connections with
//! requests in flight, non-blocking sockets driven by a spinning `epoll_wait(.., 0)`.
//!
//! Each connection keeps `depth` requests of `payload` bytes outstanding. Every `payload` bytes
//! echoed back complete the oldest outstanding request of that connection (FIFO); its latency is
//! the time from when it was issued to when its last byte was read, and a new request is issued
//! at once. Only completions inside the measurement window (after the warm-up) are recorded.
//!
//! CPU: the generator's own thread on the client side, and whatever the caller put in the
//! spec's meter (the echo server's process clock) on the server side, over the window.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::affinity::pin_current_thread;
use crate::cpu::{CpuMeter, CpuUse, Side, Window};
use crate::systems::new_histogram;

/// No echoed byte at all for this long means the server is stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the load generator does.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Echo server address.
    pub addr: SocketAddr,
    /// Number of TCP connections.
    pub conns: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Bytes per request (and per echoed response).
    pub payload: usize,
    /// Time run before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Core the generator thread is pinned to.
    pub core: usize,
    /// The server's CPU clocks; the generator adds its own thread's on the client side.
    pub cpu: Option<Arc<CpuMeter>>,
}

/// What one load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Latency of every request completed in the window, ns.
    pub hist: Histogram<u64>,
    /// Requests completed in the window.
    pub completed: u64,
    /// Length of the window.
    pub elapsed: Duration,
    /// `epoll_wait` calls in the window that returned no event (the generator had slack).
    pub empty_polls: u64,
    /// All `epoll_wait` calls in the window.
    pub polls: u64,
    /// CPU of the generator and the server over the window.
    pub cpu: Option<CpuUse>,
}

struct Conn {
    s: TcpStream,
    /// Issue times of the outstanding requests, oldest first.
    inflight: VecDeque<Instant>,
    /// Bytes of the current (incomplete) response already read.
    rx_partial: usize,
    /// Request bytes issued but not yet accepted by `send`.
    tx_pending: usize,
    /// In the retry list because `send` would block.
    blocked: bool,
}

impl Conn {
    /// Sends pending request bytes; returns true if some are still pending.
    fn flush(&mut self, txbuf: &[u8]) -> Result<bool> {
        while self.tx_pending > 0 {
            let n = self.tx_pending.min(txbuf.len());
            match self.s.write(&txbuf[..n]) {
                Ok(0) => bail!("send returned 0"),
                Ok(k) => self.tx_pending -= k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("send"),
            }
        }
        Ok(false)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// An epoll instance watching sockets for input, as both generators use it.
pub(crate) struct Poller(OwnedFd);

impl Poller {
    pub(crate) fn new() -> Result<Poller> {
        // SAFETY: plain syscall without pointer arguments.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: `epfd` is a fresh descriptor that nothing else owns.
        Ok(Poller(unsafe { OwnedFd::from_raw_fd(epfd) }))
    }

    /// Reports `fd` readable under `token`.
    pub(crate) fn watch(&self, fd: RawFd, token: u64) -> Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open; `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(())
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A non-blocking TCP connection to `addr` with TCP_NODELAY.
pub(crate) fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Runs the load on the calling thread (pinned to `spec.core`) and returns what it measured.
pub fn run(spec: &LoadSpec) -> Result<LoadResult> {
    pin_current_thread(spec.core)?;
    if let Some(m) = &spec.cpu {
        m.add_this_thread(Side::Client)?;
    }
    let mut cpu = Window::new(spec.cpu.clone());
    let epfd = Poller::new()?;

    let mut conns = Vec::with_capacity(spec.conns);
    for i in 0..spec.conns {
        let s = connect(spec.addr).with_context(|| format!("connection #{i}"))?;
        epfd.watch(s.as_raw_fd(), i as u64)?;
        conns.push(Conn {
            s,
            inflight: VecDeque::with_capacity(spec.depth),
            rx_partial: 0,
            tx_pending: 0,
            blocked: false,
        });
    }

    let txbuf = vec![0x5au8; spec.depth * spec.payload];
    let mut rxbuf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; spec.conns.max(1)];
    let mut blocked: Vec<usize> = Vec::new();
    let mut hist = new_histogram();
    let mut completed = 0u64;
    let (mut polls, mut empty_polls) = (0u64, 0u64);

    let t_start = Instant::now();
    let measure_start = t_start + spec.warmup;
    let end = measure_start + spec.duration;
    for (i, c) in conns.iter_mut().enumerate() {
        for _ in 0..spec.depth {
            c.inflight.push_back(t_start);
        }
        c.tx_pending = spec.depth * spec.payload;
        if c.flush(&txbuf)? {
            c.blocked = true;
            blocked.push(i);
        }
    }

    let mut last_progress = Instant::now();
    let now = loop {
        if !blocked.is_empty() {
            let mut j = 0;
            while j < blocked.len() {
                let c = &mut conns[blocked[j]];
                if c.flush(&txbuf)? {
                    j += 1;
                } else {
                    c.blocked = false;
                    blocked.swap_remove(j);
                }
            }
        }

        // SAFETY: `events` is a writable array of `events.len()` epoll_event entries.
        let n = unsafe { libc::epoll_wait(epfd.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("epoll_wait");
        }
        let now = Instant::now();
        if now >= end {
            cpu.end();
            break now;
        }
        if now >= measure_start {
            cpu.start();
            polls += 1;
            if n == 0 {
                empty_polls += 1;
            }
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            let k = match c.s.read(&mut rxbuf) {
                Ok(0) => bail!("server closed connection #{i}"),
                Ok(k) => k,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => continue,
                Err(e) => return Err(e).with_context(|| format!("recv on connection #{i}")),
            };
            let t = Instant::now();
            last_progress = t;
            c.rx_partial += k;
            while c.rx_partial >= spec.payload {
                c.rx_partial -= spec.payload;
                let sent = c
                    .inflight
                    .pop_front()
                    .context("server echoed more bytes than were sent")?;
                if t >= measure_start {
                    hist.saturating_record(nanos(t - sent).max(1));
                    completed += 1;
                }
                c.inflight.push_back(t);
                c.tx_pending += spec.payload;
            }
            if c.tx_pending > 0 && !c.blocked && c.flush(&txbuf)? {
                c.blocked = true;
                blocked.push(i);
            }
        }
        if now.duration_since(last_progress) > STALL_TIMEOUT {
            bail!("no echo for {STALL_TIMEOUT:?}: server stalled");
        }
    };
    drop(conns);
    if completed == 0 {
        bail!("no request completed in the measurement window");
    }
    Ok(LoadResult {
        hist,
        completed,
        elapsed: now.duration_since(measure_start),
        empty_polls,
        polls,
        cpu: cpu.result(),
    })
}
