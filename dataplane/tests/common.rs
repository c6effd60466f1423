//! Helpers shared by the data plane's integration tests.
#![allow(dead_code)]

use sigma_dataplane::{Backend, Core};
use std::cell::Cell;

/// The back ends this machine can run: epoll always, io_uring where the
/// kernel allows it (otherwise a message says why it is skipped).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Epoll];
    match &sigma_dataplane::probe::support().unavailable {
        None => out.insert(0, Backend::Uring),
        Some(why) => eprintln!("skipping the io_uring back end: {why}"),
    }
    out
}

/// A core of `backend` on the current thread (not pinned: tests run in parallel).
pub fn core(backend: Backend) -> Core {
    Core::builder().backend(backend).build().expect("core")
}

/// Runs `f` on a fresh thread and waits at most `limit` for it: a core that
/// sleeps forever fails the test instead of hanging it (the thread leaks).
pub fn within<T: Send + 'static>(limit: std::time::Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done after {limit:?}"),
    }
}

/// Raises this process's soft open-file limit to `want` (at most the hard
/// limit); returns the soft limit now.
pub fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(want);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// xorshift64*: a small deterministic generator; the seed is printed.
#[derive(Debug)]
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(Cell::new(seed | 1))
    }
    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Descriptors open in this process now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Polls `fut` once and drops it: an operation cancelled mid-flight.
/// Returns whether it was still pending when dropped.
pub async fn poll_once_and_drop<F: std::future::Future>(fut: F) -> bool {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_pending())).await
}
