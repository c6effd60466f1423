//! σ RPC on the control thread: a [`Transport`] over tokio's Unix streams,
//! so that a service can be served where the etcd client lives (tokio)
//! with no thread hop between the request and the store.
//!
//! The data plane's RPC code is executor-agnostic (it only needs a
//! `Transport`); this is the tokio one, by readiness: wait until the socket
//! is readable or writable, then a non-blocking read or vectored write.

use bytes::BytesMut;
use sigma_dataplane::net::Gather;
use sigma_dataplane::rpc::Transport;
use sigma_dataplane::BufResult;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Buffers one vectored write passes, at most (Linux's UIO_MAXIOV is 1024).
const IOV_MAX: usize = 64;

/// A connected Unix stream on the current tokio runtime. Like a data-plane
/// core, a receive first spins (trying the socket, yielding to other tasks
/// in between) for the spin budget before it waits for readiness: a client
/// that calls again right after an answer is served without a wake-up.
#[derive(Debug)]
pub struct TokioUnix {
    stream: tokio::net::UnixStream,
    spin: Duration,
}

impl TokioUnix {
    /// Wraps `stream`, spinning for [`sigma_dataplane::default_spin`].
    pub fn new(stream: tokio::net::UnixStream) -> TokioUnix {
        TokioUnix::with_spin(stream, sigma_dataplane::default_spin())
    }

    /// Wraps `stream`, spinning for `spin` (zero: never).
    pub fn with_spin(stream: tokio::net::UnixStream, spin: Duration) -> TokioUnix {
        TokioUnix { stream, spin }
    }
}

impl Transport for TokioUnix {
    async fn recv_buf(&self, mut buf: BytesMut) -> BufResult<usize, BytesMut> {
        if !self.spin.is_zero() {
            let started = Instant::now();
            loop {
                match self.stream.try_read_buf(&mut buf) {
                    Ok(n) => return (Ok(n), buf),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return (Err(e), buf),
                }
                if started.elapsed() >= self.spin {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        loop {
            if let Err(e) = self.stream.readable().await {
                return (Err(e), buf);
            }
            match self.stream.try_read_buf(&mut buf) {
                Ok(n) => return (Ok(n), buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn send_all_gather(&self, mut gather: Gather) -> BufResult<(), Gather> {
        while !gather.is_empty() {
            if let Err(e) = self.stream.writable().await {
                return (Err(e), gather);
            }
            let written = {
                let slices: Vec<IoSlice<'_>> = gather.bufs().iter().take(IOV_MAX).map(|b| IoSlice::new(b)).collect();
                self.stream.try_write_vectored(&slices)
            };
            match written {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), gather),
                Ok(n) => gather.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), gather),
            }
        }
        (Ok(()), gather)
    }

    fn peer(&self) -> String {
        format!("unix fd {} (control thread)", self.stream.as_raw_fd())
    }

    async fn sleep_until(&self, at: Instant) {
        tokio::time::sleep_until(at.into()).await;
    }

    fn shutdown_both(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) on a socket fd this stream owns; it changes no memory.
        if unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Runs `f` with a deadline on whichever executor polls it: tokio's timer
/// inside a tokio runtime, the data-plane core's timer otherwise.
pub async fn timeout<F: std::future::Future>(d: Duration, f: F) -> Result<F::Output, Elapsed> {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::timeout(d, f).await.map_err(|_| Elapsed)
    } else {
        sigma_dataplane::timeout(d, f).await.map_err(|_| Elapsed)
    }
}

/// A deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;
